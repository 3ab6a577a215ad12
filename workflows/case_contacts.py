"""Reaching the borrower: messages, agent calls, field visits and legal steps, inside the rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policies import compliance
    from workflows import simulation
    from contracts.activity_io import (
        CLOSE_TASK,
        CREATE_TASK,
        RECORD_LEGAL_ACTION,
        RESERVE_CONTACT,
        SEND_EMAIL,
        SEND_SMS,
        ContactDecision,
        ContactRecord,
        ContactRequest,
        LegalInput,
        SendInput,
        SendResult,
        TaskClose,
        TaskInput,
    )
    from workflows.case_state import (
        OpenTask,
    )
    from workflows.ledger import format_amount
    from contracts.messages import (
        TaskOutcome,
    )
    from contracts.policy import Step
from workflows.case_base import (
    CONNECTED,
    ESCALATING,
    SEND_RETRY,
    CaseBase,
    _key,
)


class CaseContacts(CaseBase):
    """Messages, calls, visits and legal steps, within the rule pack."""

    def _contact_key(self, channel: str) -> str:
        assert self.s is not None
        loan = self.s.loan
        return f"e:{_key(loan.email)}" if channel == "email" else f"p:{_key(loan.phone)}"

    def _usable(self, channel: str) -> bool:
        assert self.s is not None
        if channel == "visit":
            return True  # a field visit goes to the borrower's address, not to the phone number
        return self.s.email_ok if channel == "email" else self.s.phone_ok

    def _record_contact(self, step_id: str, channel: str, decision: str, *, key: str,
                        rule: str | None, reason: str, template: str | None = None,
                        outcome: str | None = None) -> None:
        assert self.s is not None
        s = self.s
        self._event(f"contact_{decision}", f"{channel} {decision}: {reason}", rule=rule,
                    detail={"step": step_id, "channel": channel})
        self._queue_contact(ContactRecord(
            key=key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=self._contact_key(channel), channel=channel, step_id=step_id,
            stage=s.stage.value, decision=decision, at=self._now(), template=template,
            rule=rule, reason=reason, outcome=outcome,
        ))

    def _contact_blocked(self, step: Step | None, step_id: str, channel: str, attempt_key: str) -> bool:
        """Cease-contact and unusable addresses stop a contact before any window or cap."""
        assert self.s is not None
        s = self.s
        notice = step.notice if step else None
        if s.ceased and not compliance.may_contact_after_cease(s.policy.rule_pack, notice):
            self._record_contact(step_id, channel, "skipped", key=f"{attempt_key}/skipped",
                                 rule=f"{s.policy.rule_pack.name}.cease_communication",
                                 reason="borrower asked to cease contact")
            return True
        if not self._usable(channel):
            self._record_contact(step_id, channel, "skipped", key=f"{attempt_key}/skipped",
                                 rule=None, reason=f"no valid {'address' if channel == 'email' else 'phone number'}")
            return True
        return False

    async def _clear_to_contact(self, step_id: str, channel: str, attempt_key: str,
                                template: str | None, *, caps: bool = True) -> bool:
        """Wait for the window and room under the caps; False if the case moved on meanwhile.

        Ladder contacts (`caps`) are abandoned when the case closes or pauses; notices the case
        owes (receipts, confirmations) still go out, within the window, after it closes.
        """
        assert self.s is not None
        s = self.s
        pack = s.policy.rule_pack
        deferrals = 0
        while True:
            if caps and not s.active:
                return False
            now = self._now()
            at, rule = compliance.next_allowed(now, s.loan.timezone, pack)
            reason = "outside the contact window"
            if at <= now and caps:
                request = ContactRequest(
                    key=attempt_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
                    contact_key=self._contact_key(channel), channel=channel, step_id=step_id,
                    stage=s.stage.value, template=template, at=now, timezone=s.loan.timezone,
                    rule_pack=pack,
                )
                if s.simulate:
                    decision = simulation.reserve(s.simulated_attempts, request)
                else:
                    decision = await self._db(RESERVE_CONTACT, request, result_type=ContactDecision)
                if decision.allowed:
                    return True
                at, rule, reason = decision.retry_at or now + timedelta(days=1), decision.rule, decision.reason
            elif at <= now:
                return True
            deferrals += 1
            local_at = compliance.local(at, s.loan.timezone)
            self._record_contact(step_id, channel, "deferred", key=f"{attempt_key}/deferred/{deferrals}",
                                 rule=rule, reason=f"{reason}; deferred to {local_at:%Y-%m-%d %H:%M} local",
                                 template=template)
            if not caps:
                await self._sleep_until(at, lambda: False)
                continue
            paused_before = s.paused_by
            await self._sleep_until(at, lambda: not s.active or s.paused_by != paused_before)
            if s.active and s.paused_by is not None and paused_before is None:
                self._record_contact(step_id, channel, "skipped", key=f"{attempt_key}/paused",
                                     rule=None, reason=f"ladder paused by {s.paused_by}")
                return False

    async def _contact(self, step: Step | None, channel: str, template: str, *,
                       key_base: str | None = None, extra: dict[str, str] | None = None,
                       caps: bool = True) -> bool:
        """Send one message on one channel, within the rules; True if it went out."""
        assert self.s is not None
        s = self.s
        step_id = step.id if step else (key_base or "notice")
        attempt_key = f"{workflow.info().workflow_id}/{key_base or step_id}/{channel}"
        if self._contact_blocked(step, step_id, channel, attempt_key):
            fallback = "email" if channel == "sms" else None
            if (fallback and step is not None and fallback not in step.channels
                    and self._usable(fallback) and not s.ceased):
                return await self._contact(step, fallback, template, key_base=key_base, extra=extra)
            return False
        if s.policy.rule_pack.validation_notice and not s.validation_notice_sent and template != "validation_notice":
            s.validation_notice_sent = True
            await self._contact(None, "email", "validation_notice", key_base="validation-notice")
        if not await self._clear_to_contact(step_id, channel, attempt_key, template, caps=caps):
            return False
        result: SendResult = SendResult(status="sent") if s.simulate else await workflow.execute_activity(
            SEND_SMS if channel == "sms" else SEND_EMAIL,
            SendInput(
                outbox_key=attempt_key, loan_id=s.loan.loan_id, channel=channel,
                to=s.loan.phone if channel == "sms" else s.loan.email, template=template,
                locale=s.loan.locale, context=self._template_context(extra or {}),
                contact_key=attempt_key,
            ),
            result_type=SendResult,
            start_to_close_timeout=timedelta(seconds=s.policy.settings.send_timeout_seconds),
            retry_policy=SEND_RETRY,
        )
        pack = s.policy.rule_pack.name
        if result.status == "sent":
            s.contact_counts[channel] = s.contact_counts.get(channel, 0) + 1
            self._record_contact(step_id, channel, "sent", key=attempt_key,
                                 rule=f"{pack}.window_and_caps", template=template, outcome="sent",
                                 reason=f"{template} sent within the {pack} window and caps")
            return True
        self._record_contact(step_id, channel, "failed", key=attempt_key, rule=None, template=template,
                             outcome="failed", reason=f"provider refused: {result.error_code}")
        if channel == "sms":
            s.phone_ok = False
        else:
            s.email_ok = False
        # Only SMS falls back (to e-mail): the formal notice, legal letters and write-off notice
        # exist as e-mail only, and an SMS "fallback" with them failed the whole case.
        if channel == "sms" and step is not None and "email" not in step.channels and self._usable("email"):
            return await self._contact(step, "email", template, key_base=f"{step_id}-fallback", extra=extra)
        return False

    def _template_context(self, extra: dict[str, str]) -> dict[str, Any]:
        assert self.s is not None
        s = self.s
        loan = s.loan
        today = self._today()
        context: dict[str, Any] = {
            "lender": loan.lender, "borrower_name": loan.borrower_name, "loan_ref": loan.loan_id,
            "amount": format_amount(s.outstanding), "currency": loan.currency,
            "days_overdue": self._dpd(), "due_date": s.due_date.isoformat(),
            "days_before_due": max(0, -self._dpd()),
            "opt_out": s.policy.rule_pack.opt_out_required,
            "validation_notice": False,
            "dispute_by": (today + timedelta(days=30)).isoformat(),
            "respond_by": (today + timedelta(days=14)).isoformat(),
            "agency_name": "our appointed collection agency",
            "paid_amount": format_amount(s.paid_total), "excess": "",
        }
        context.update(extra)
        return context

    # ------------------------------------------------------- calls and visits

    async def _task(self, step: Step) -> None:
        assert self.s is not None
        s = self.s
        kind = step.kind
        task_key = f"{workflow.info().workflow_id}/{step.id}"
        if self._contact_blocked(step, step.id, kind, task_key):
            return
        if s.policy.rule_pack.validation_notice and not s.validation_notice_sent:
            s.validation_notice_sent = True  # a call or visit is a communication too
            await self._contact(None, "email", "validation_notice", key_base="validation-notice")
        if not await self._clear_to_contact(step.id, kind, task_key, None):
            return
        settings = s.policy.settings
        days = step.deadline_days or (settings.call_deadline_days if kind == "call" else settings.visit_deadline_days)
        now = self._now()
        due_by = now + timedelta(days=days)
        if not s.simulate:
            await self._db(
                CREATE_TASK,
                TaskInput(task_key=task_key, loan_id=s.loan.loan_id, workflow_id=workflow.info().workflow_id,
                          kind=kind, step_id=step.id, priority=step.priority, due_by=due_by, created_at=now),
            )
        s.open_task = OpenTask(task_key=task_key, kind=kind, step_id=step.id,
                               contact_key=task_key, due_by=due_by)
        s.contact_counts[kind] = s.contact_counts.get(kind, 0) + 1
        self._event("task_created", f"{kind} task created, due by {due_by:%Y-%m-%d %H:%M} UTC",
                    detail={"task_key": task_key, "step": step.id})
        task = s.open_task
        # A cease request withdraws the task at once: no agent may call or visit after it.
        await self._sleep_until(due_by, lambda: task.outcome is not None or not s.active or s.ceased)
        s.open_task = None
        if task.outcome is None and (not s.active or s.ceased):
            outcome, status = "cancelled", "cancelled"
        else:
            outcome = task.outcome or TaskOutcome.DEADLINE_MISSED.value
            status = "done" if task.outcome else "expired"
        if not s.simulate:
            await self._db(
                CLOSE_TASK,
                TaskClose(task_key=task_key, status=status, outcome=outcome, completed_at=self._now(),
                          agent=task.agent, note=task.note),
            )
        connected = outcome in {o.value for o in CONNECTED}
        self._queue_contact(ContactRecord(
            key=task_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=self._contact_key(kind), channel=kind, step_id=step.id, stage=s.stage.value,
            decision="sent", at=self._now(), outcome="connected" if connected else "unanswered",
        ))
        self._event("task_outcome", f"{kind} outcome: {outcome}", actor=task.agent,
                    detail={"task_key": task_key, "outcome": outcome})
        if outcome == TaskOutcome.WRONG_NUMBER.value:
            s.phone_ok = False
        elif outcome in {o.value for o in ESCALATING} and s.active:
            self._escalate(f"{kind} outcome {outcome}")

    # ----------------------------------------------------------------- legal

    async def _legal(self, step: Step) -> None:
        assert self.s is not None
        s = self.s
        action = step.action or "lawyer_letter"
        now = self._now()
        documents = [{
            "type": action, "template": step.template, "locale": s.loan.locale,
            "amount": str(s.outstanding), "currency": s.loan.currency,
            "days_past_due": self._dpd(), "generated_at": now.isoformat(),
        }]
        if not s.simulate:
            await self._db(
                RECORD_LEGAL_ACTION,
                LegalInput(key=f"{workflow.info().workflow_id}/{step.id}", loan_id=s.loan.loan_id,
                           action=action, created_at=now, documents=documents),
            )
        self._event("legal_action", f"legal action recorded: {action}", detail={"step": step.id, "action": action})
        for channel in step.channels or ["email"]:
            await self._contact(step, channel, step.template or action)

