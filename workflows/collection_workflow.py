"""One durable workflow per overdue loan: reminders, calls, negotiation, escalation, write-off.

The workflow follows the ladder of the policy it pinned when it started, contacting the borrower
only when the rule pack allows, pausing while a promise, plan, settlement or hold is open, and
closing when the loan is paid, settled, closed or written off. Every decision is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import compliance, negotiation
    from workflows.activity_io import (
        CLOSE_TASK,
        CREATE_TASK,
        RECORD,
        RECORD_CONTACT,
        RECORD_LEGAL_ACTION,
        RESERVE_CONTACT,
        RESOLVE_POLICY,
        SEND_EMAIL,
        SEND_SMS,
        CaseSnapshot,
        ContactDecision,
        ContactRecord,
        ContactRequest,
        EventRecord,
        LegalInput,
        PaymentRecord,
        RecordBatch,
        SendInput,
        SendResult,
        StageChange,
        TaskClose,
        TaskInput,
    )
    from workflows.case_state import (
        CaseData,
        HoldState,
        Notice,
        OpenTask,
        PlanState,
        PromiseState,
        SettlementState,
    )
    from workflows.clock import PolicyClock
    from workflows.ledger import Balance, balance_of, format_amount
    from workflows.messages import (
        CaseResult,
        CaseState,
        CaseStatus,
        CeaseInput,
        CloseInput,
        ExtensionInput,
        HoldInput,
        LoanInput,
        PaymentInput,
        PlanInput,
        PromiseInput,
        ResolveHoldInput,
        SettlementInput,
        Stage,
        TaskOutcome,
        TaskOutcomeInput,
        TimelineEvent,
        UpdateResult,
        WaiverInput,
    )
    from workflows.policy import ResolvedPolicy, Step
    from workflows.shared import (
        ASSIGNED_AGENT,
        CASE_STATE,
        CURRENCY,
        DAYS_PAST_DUE,
        OUTSTANDING,
        POLICY_VERSION,
        STAGE,
    )

STAGE_ORDER = [Stage.PRE_DUE, Stage.EARLY, Stage.MIDDLE, Stage.LATE, Stage.LEGAL, Stage.WRITTEN_OFF]
CONNECTED = {TaskOutcome.REACHED, TaskOutcome.PROMISED, TaskOutcome.VISITED}
ESCALATING = {TaskOutcome.REFUSED, TaskOutcome.NOT_FOUND}

DB_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
}
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["UnknownTemplateError", "UndefinedError"],
)


@dataclass
class CollectionInput:
    loan: LoanInput
    # Normally resolved from the policy files by an activity when the case opens; a caller
    # may pin one explicitly (tests, simulations).
    policy: ResolvedPolicy | None = None
    # Carried through continue-as-new.
    state: CaseData | None = None


def _key(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:24]


def _refuse(err: negotiation.Refusal) -> ApplicationError:
    return ApplicationError(str(err), type="Refused", non_retryable=True)


@workflow.defn
class CollectionWorkflow:
    @workflow.init
    def __init__(self, inp: CollectionInput) -> None:
        self._inbox: list[PaymentInput] = []
        self._wake = False
        self._stopping = False
        self._notices_done = False
        self._sa: dict[str, Any] = {}
        self._contact_queue: list[ContactRecord] = []
        self.s: CaseData | None = inp.state
        if self.s is not None:
            self.s.run_count += 1
        elif inp.policy is not None:
            self.s = self._new_case(inp.loan, inp.policy)

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: CollectionInput) -> CaseResult:
        if self.s is None:
            policy = await workflow.execute_activity(
                RESOLVE_POLICY, inp.loan, result_type=ResolvedPolicy,
                start_to_close_timeout=timedelta(seconds=30),
            )
            self.s = self._new_case(inp.loan, policy)
        s = self.s
        for payment in self._inbox:
            self._apply_payment(payment)
        self._inbox.clear()
        # Records are written and owed notices sent in the background, each in order; a notice
        # waiting for the contact window never holds back the records.
        recorder = asyncio.create_task(self._recorder())
        notifier = asyncio.create_task(self._notifier())
        continue_as_new = False
        while s.active:
            if self._history_is_long():
                continue_as_new = True
                break
            await self._advance()
        self._notices_done = True
        await notifier
        self._stopping = True
        await recorder
        await workflow.wait_condition(workflow.all_handlers_finished)
        if continue_as_new:
            workflow.continue_as_new(CollectionInput(loan=s.loan, policy=s.policy, state=s))
        return CaseResult(
            loan_id=s.loan.loan_id, state=s.state, stage=s.stage, outstanding=s.outstanding,
            currency=s.loan.currency, paid_total=s.paid_total, excess=s.excess,
            close_reason=s.close_reason,
        )

    def _new_case(self, loan: LoanInput, policy: ResolvedPolicy) -> CaseData:
        real_now = workflow.now()
        balance = balance_of(loan.amount_overdue, loan.interest, loan.fees)
        s = CaseData(
            loan=loan, policy=policy, clock_origin=real_now, opened_at=real_now,
            due_date=loan.due_date, principal=balance.principal, interest=balance.interest,
            fees=balance.fees, borrower_key=loan.borrower_id or f"p:{_key(loan.phone)}",
        )
        self.s = s
        s.stage = self._stage_for_dpd()
        self._event(
            "case_opened",
            f"case opened under policy {policy.name} {policy.version}, segment {policy.segment}, "
            f"ladder {policy.ladder_name}, rule pack {policy.rule_pack.name}",
            detail={"amount": str(loan.amount_overdue), "currency": loan.currency},
        )
        s.pending_stage_changes.append(
            StageChange(self._next_key(), loan.loan_id, None, s.stage.value, self._now())
        )
        return s

    def _history_is_long(self) -> bool:
        info = workflow.info()
        assert self.s is not None
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > self.s.policy.settings.max_history_events
        )

    # ---------------------------------------------------------------- time

    @property
    def _clock(self) -> PolicyClock:
        assert self.s is not None
        return PolicyClock(self.s.clock_origin, self.s.policy.settings.day_seconds)

    def _now(self) -> datetime:
        return self._clock.policy_time(workflow.now())

    def _today(self) -> date:
        assert self.s is not None
        return compliance.local(self._now(), self.s.loan.timezone).date()

    def _at_local(self, day: date, hour: int = 0) -> datetime:
        assert self.s is not None
        return compliance.step_instant(day, 0, hour, self.s.loan.timezone)

    def _dpd(self) -> int:
        assert self.s is not None
        return (self._today() - self.s.due_date).days

    def _stage_for_dpd(self) -> Stage:
        return Stage.PRE_DUE if self._dpd() <= 0 else Stage.EARLY

    async def _sleep_until(self, target: datetime | None, done: Any) -> bool:
        """Sleep (in policy time) until `target` or until `done()`; True if `done()` woke us."""
        if target is None:
            await workflow.wait_condition(done)
            return True
        delay = self._clock.real_delay(self._now(), target)
        if delay <= timedelta(0):
            return bool(done())
        try:
            await workflow.wait_condition(done, timeout=delay)
            return True
        except asyncio.TimeoutError:
            return False

    # ---------------------------------------------------------------- ladder

    def _step_time(self, step: Step) -> datetime:
        assert self.s is not None
        return compliance.step_instant(self.s.due_date, step.day, step.hour, self.s.loan.timezone)

    def _applies(self, step: Step) -> bool:
        assert self.s is not None
        if step.min_outstanding is not None and self.s.outstanding < step.min_outstanding:
            return False
        return step.max_outstanding is None or self.s.outstanding < step.max_outstanding

    def _due_step(self, now: datetime) -> Step | None:
        """The step to run now. Steps passed over (while paused, or superseded) are recorded."""
        assert self.s is not None
        s = self.s
        due = [
            st for st in s.policy.steps
            if st.id not in s.done_steps and (st.id in s.pull_forward or self._step_time(st) <= now)
        ]
        for st in due:
            if not self._applies(st):
                self._skip(st, f"balance {s.outstanding} outside the step's bounds")
        due = [st for st in due if st.id not in s.done_steps]
        timed = [st for st in due if st.id not in s.pull_forward]
        if len(due) > 1 and timed:
            latest = max(self._step_time(st) for st in timed)
            for st in timed:
                if self._step_time(st) < latest:
                    self._skip(st, "superseded by a later step that is already due")
        due = [st for st in due if st.id not in s.done_steps]
        return due[0] if due else None

    def _next_step_time(self) -> datetime | None:
        assert self.s is not None
        times = [self._step_time(st) for st in self.s.policy.steps if st.id not in self.s.done_steps]
        return min(times) if times else None

    def _skip(self, step: Step, why: str) -> None:
        assert self.s is not None
        self.s.done_steps.append(step.id)
        self._event("step_skipped", f"step {step.id} skipped: {why}", detail={"step": step.id})

    def _escalate(self, why: str) -> None:
        """Jump to the first step of the next stage, recording the steps passed over."""
        assert self.s is not None
        s = self.s
        rank = STAGE_ORDER.index(s.stage) if s.stage in STAGE_ORDER else 0
        remaining = [st for st in s.policy.steps if st.id not in s.done_steps]
        target = next((st for st in remaining if STAGE_ORDER.index(st.stage) > rank), None)
        if target is None:
            return
        for st in remaining:
            if st is target:
                break
            self._skip(st, f"escalated: {why}")
        s.pull_forward.append(target.id)
        self._event("escalated", f"escalated to {target.stage.value}: {why}", detail={"step": target.id})

    async def _advance(self) -> None:
        assert self.s is not None
        s = self.s
        now = self._now()
        wake_times = self._check_deadlines(now)
        if not s.active:
            return
        if s.paused_by is None:
            step = self._due_step(now)
            if step is not None:
                await self._run_step(step)
                return
            next_time = self._next_step_time()
            if next_time is not None:
                wake_times.append(next_time)
        self._wake = False
        self._refresh_dpd()
        await self._sleep_until(min(wake_times) if wake_times else None, lambda: self._wake)

    async def _run_step(self, step: Step) -> None:
        assert self.s is not None
        s = self.s
        s.done_steps.append(step.id)
        if step.id in s.pull_forward:
            s.pull_forward.remove(step.id)
        self._set_stage(step.stage)
        self._event("step_started", f"step {step.id} ({step.kind}) started", detail={"step": step.id})
        if step.kind == "message":
            for channel in step.channels:
                await self._contact(step, channel, step.template or "")
        elif step.kind in ("call", "visit"):
            await self._task(step)
        elif step.kind == "legal":
            await self._legal(step)
        elif step.kind == "write_off":
            if step.template:
                await self._contact(step, "email", step.template)
            self._close(CaseState.WRITTEN_OFF, "written off at the end of the ladder")
            self._set_stage(Stage.WRITTEN_OFF)

    def _set_stage(self, stage: Stage) -> None:
        assert self.s is not None
        s = self.s
        if stage == s.stage or (stage in STAGE_ORDER and s.stage in STAGE_ORDER
                                and STAGE_ORDER.index(stage) < STAGE_ORDER.index(s.stage)):
            return
        s.pending_stage_changes.append(
            StageChange(self._next_key(), s.loan.loan_id, s.stage.value, stage.value, self._now())
        )
        self._event("stage_changed", f"stage {s.stage.value} -> {stage.value}")
        s.stage = stage

    # -------------------------------------------------------------- contacts

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
        self._contact_queue.append(ContactRecord(
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
                decision = await workflow.execute_activity(
                    RESERVE_CONTACT,
                    ContactRequest(
                        key=attempt_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
                        contact_key=self._contact_key(channel), channel=channel, step_id=step_id,
                        stage=s.stage.value, template=template, at=now, timezone=s.loan.timezone,
                        rule_pack=pack,
                    ),
                    result_type=ContactDecision, **DB_OPTIONS,
                )
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
        result: SendResult = await workflow.execute_activity(
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
        await workflow.execute_activity(
            CREATE_TASK,
            TaskInput(task_key=task_key, loan_id=s.loan.loan_id, workflow_id=workflow.info().workflow_id,
                      kind=kind, step_id=step.id, priority=step.priority, due_by=due_by, created_at=now),
            **DB_OPTIONS,
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
        await workflow.execute_activity(
            CLOSE_TASK,
            TaskClose(task_key=task_key, status=status, outcome=outcome, completed_at=self._now(),
                      agent=task.agent, note=task.note),
            **DB_OPTIONS,
        )
        connected = outcome in {o.value for o in CONNECTED}
        self._contact_queue.append(ContactRecord(
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
        await workflow.execute_activity(
            RECORD_LEGAL_ACTION,
            LegalInput(key=f"{workflow.info().workflow_id}/{step.id}", loan_id=s.loan.loan_id,
                       action=action, created_at=now, documents=documents),
            **DB_OPTIONS,
        )
        self._event("legal_action", f"legal action recorded: {action}", detail={"step": step.id, "action": action})
        for channel in step.channels or ["email"]:
            await self._contact(step, channel, step.template or action)

    # ------------------------------------------------------------- deadlines

    def _check_deadlines(self, now: datetime, *, closing: bool = False) -> list[datetime]:
        """Settle promises, plans, settlements and holds whose time has come; return wake times.

        `closing`: the case is about to close (paid or settled), so this is the last look: record
        what the payment fulfilled, but queue no more reminders.
        """
        assert self.s is not None
        s = self.s
        settings = s.policy.settings
        wake: list[datetime] = []
        if s.promise is not None and s.promise.status == "open":
            p = s.promise
            paid = s.paid_total - p.paid_before
            deadline = self._at_local(p.promised_date + timedelta(days=settings.promise_grace_days + 1))
            if paid >= p.amount:
                p.status = "kept"
                self._event("promise_kept", f"promise of {p.amount} kept ({paid} paid)", actor=p.agent)
            elif now >= deadline:
                p.status = "broken"
                s.broken_promises += 1
                self._event("promise_broken", f"promise of {p.amount} by {p.promised_date} broken "
                            f"({paid} paid); broken promises: {s.broken_promises}", actor=p.agent)
                if s.broken_promises >= settings.broken_promises_to_escalate:
                    self._escalate(f"{s.broken_promises} broken promises")
            else:
                wake.append(deadline)
        if s.plan is not None and s.plan.status == "active":
            wake += self._check_plan(now, remind=not closing)
        if s.settlement is not None and s.settlement.status == "open":
            st = s.settlement
            deadline = self._at_local(st.pay_by + timedelta(days=settings.promise_grace_days + 1))
            if now >= deadline:
                st.status = "broken"
                self._event("settlement_broken", f"settlement of {st.amount} not paid by {st.pay_by}",
                            actor=st.agent)
            else:
                wake.append(deadline)
        if s.hold is not None:
            review = self._at_local(s.hold.review_by)
            if now >= review:
                self._event("hold_lapsed", f"{s.hold.kind} hold reached its review date "
                            f"{s.hold.review_by}; contact resumes")
                s.hold = None
            else:
                wake.append(review)
        return wake

    def _check_plan(self, now: datetime, *, remind: bool = True) -> list[datetime]:
        assert self.s is not None and self.s.plan is not None
        s, plan = self.s, self.s.plan
        settings = s.policy.settings
        paid = s.paid_total - plan.paid_before
        covered = Decimal("0")
        for i, inst in enumerate(plan.installments):
            covered += inst.amount
            if i < plan.next_index:
                continue
            if paid >= covered:
                plan.next_index = i + 1
                self._event("installment_paid", f"installment {i + 1} of {len(plan.installments)} paid")
                continue
            remind_at = self._at_local(inst.due_date - timedelta(days=settings.installment_reminder_days), 10)
            if remind and now >= remind_at and i not in plan.reminded:
                plan.reminded.append(i)
                s.pending_notices.append(Notice(
                    key=f"plan-{len(s.timeline)}-inst{i + 1}", template="installment_reminder",
                    channels=["sms", "email"],
                    extra={"installment_amount": format_amount(inst.amount),
                           "installment_due": inst.due_date.isoformat()},
                ))
            deadline = self._at_local(inst.due_date + timedelta(days=settings.installment_grace_days + 1))
            if now >= deadline:
                plan.status = "broken"
                self._event("plan_broken", f"installment {i + 1} ({inst.amount} due {inst.due_date}) "
                            "missed past grace; escalation resumes", actor=plan.agent)
                return []
            return [t for t in (remind_at, deadline) if t > now]
        plan.status = "completed"
        self._event("plan_completed", "installment plan completed", actor=plan.agent)
        return []

    # ------------------------------------------------------------- payments

    def _apply_payment(self, p: PaymentInput) -> None:
        assert self.s is not None
        s = self.s
        if p.payment_id in s.payment_ids:
            return  # the loan system resent it: already applied
        if p.currency != s.loan.currency or not p.amount.is_finite() or p.amount <= 0:
            self._event("payment_rejected", f"payment {p.payment_id} not applied: "
                        f"{p.amount} {p.currency} (loan is in {s.loan.currency})", actor=p.source)
            return
        s.payment_ids.append(p.payment_id)
        paid_at = p.paid_at or workflow.now()
        if not s.active:
            s.excess += p.amount
            self._event("payment_after_close", f"payment {p.payment_id} of {p.amount} arrived after "
                        f"the case closed; recorded as excess", actor=p.source)
            s.pending_payments.append(PaymentRecord(s.loan.loan_id, p.payment_id, p.amount,
                                                    p.currency, paid_at, {"excess": str(p.amount)}))
            return
        balance, allocation, excess = s.balance.allocate(p.amount, list(s.policy.settings.payment_order))
        s.set_balance(balance)
        s.paid_total += p.amount
        alloc = {k: str(v) for k, v in allocation.items()}
        if excess > 0:
            alloc["excess"] = str(excess)
            s.excess += excess
        s.pending_payments.append(PaymentRecord(s.loan.loan_id, p.payment_id, p.amount, p.currency,
                                                paid_at, alloc))
        self._event("payment", f"payment {p.payment_id} of {p.amount} {p.currency} applied "
                    f"({', '.join(f'{k} {v}' for k, v in alloc.items())}); outstanding {s.outstanding}",
                    actor=p.source, detail={"payment_id": p.payment_id, "allocation": alloc})
        st = s.settlement
        if st is not None and st.status == "open" and s.paid_total - st.paid_before >= st.amount:
            st.status = "settled"
            waived = s.outstanding
            s.set_balance(Balance(Decimal("0"), Decimal("0"), Decimal("0")))
            self._event("settled", f"settlement of {st.amount} paid; remaining {waived} waived",
                        actor=st.agent, detail={"waived": str(waived)})
            self._notify("settlement_receipt", ["sms", "email"],
                         {"settlement_amount": format_amount(st.amount)})
            self._check_deadlines(self._now(), closing=True)  # a promise or plan it fulfilled
            self._close(CaseState.SETTLED, "settled")
        elif s.outstanding <= 0:
            self._notify("payment_receipt", ["sms", "email"],
                         {"excess": format_amount(s.excess) if s.excess > 0 else ""})
            self._check_deadlines(self._now(), closing=True)  # a promise or plan it fulfilled
            self._close(CaseState.PAID, "paid in full" + (f" with {s.excess} excess" if s.excess > 0 else ""))
        else:
            self._notify("payment_ack", ["sms"], {"paid_amount": format_amount(p.amount)})
        self._wake = True

    def _notify(self, template: str, channels: list[str], extra: dict[str, str]) -> None:
        assert self.s is not None
        self.s.pending_notices.append(Notice(key=f"{template}-{self.s.seq}", template=template,
                                             channels=channels, extra=extra))

    def _close(self, state: CaseState, reason: str, *, actor: str | None = None) -> None:
        assert self.s is not None
        s = self.s
        if not s.active:
            return
        s.state = state
        s.close_reason = reason
        s.closed_at = self._now()
        self._event("case_closed", f"case closed: {state.value} ({reason})", actor=actor)
        self._wake = True

    # ------------------------------------------------------------- recording

    def _next_key(self) -> str:
        assert self.s is not None
        self.s.seq += 1
        return f"{self.s.loan.loan_id}/{self.s.seq}"

    def _event(self, kind: str, summary: str, *, rule: str | None = None, actor: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
        assert self.s is not None
        s = self.s
        at = self._now()
        s.timeline.append(TimelineEvent(at=at, kind=kind, summary=summary, rule=rule, actor=actor,
                                        detail=detail or {}))
        s.pending_events.append(EventRecord(key=self._next_key(), loan_id=s.loan.loan_id, kind=kind,
                                            summary=summary, occurred_at=at, actor=actor, rule=rule,
                                            detail=detail or {}))
        s.snapshot_dirty = True

    def _refresh_dpd(self) -> None:
        if self._sa.get("dpd") != self._dpd():
            assert self.s is not None
            self.s.snapshot_dirty = True

    def _has_pending(self) -> bool:
        assert self.s is not None
        s = self.s
        return bool(s.pending_events or s.pending_payments or s.pending_stage_changes
                    or self._contact_queue or s.snapshot_dirty)

    async def _notifier(self) -> None:
        """Sends the notices the case owes (receipts, acknowledgements, confirmations) in order."""
        assert self.s is not None
        s = self.s
        while True:
            await workflow.wait_condition(lambda: bool(s.pending_notices) or self._notices_done)
            if not s.pending_notices:
                return
            notice = s.pending_notices[0]
            for channel in notice.channels:
                await self._contact(None, channel, notice.template, key_base=notice.key,
                                    extra=notice.extra, caps=False)
            s.pending_notices.pop(0)

    async def _recorder(self) -> None:
        """Writes what the case learned to PostgreSQL, in order, in one transaction per batch."""
        assert self.s is not None
        s = self.s
        while True:
            await workflow.wait_condition(lambda: self._has_pending() or self._stopping)
            if not self._has_pending():
                return
            contacts, self._contact_queue = list(self._contact_queue), []
            for rec in contacts:
                await workflow.execute_activity(RECORD_CONTACT, rec, **DB_OPTIONS)
            batch = RecordBatch(case=self._snapshot(), events=s.pending_events[:],
                                payments=s.pending_payments[:], stage_changes=s.pending_stage_changes[:])
            s.snapshot_dirty = False
            await workflow.execute_activity(RECORD, batch, **DB_OPTIONS)
            del s.pending_events[:len(batch.events)]
            del s.pending_payments[:len(batch.payments)]
            del s.pending_stage_changes[:len(batch.stage_changes)]
            self._upsert_search_attributes()

    def _snapshot(self) -> CaseSnapshot:
        assert self.s is not None
        s = self.s
        p = s.policy
        return CaseSnapshot(
            loan_id=s.loan.loan_id, workflow_id=workflow.info().workflow_id,
            borrower_key=s.borrower_key, policy_name=p.name, policy_version=p.version,
            segment=p.segment, rule_pack=p.rule_pack.name, currency=s.loan.currency,
            amount_placed=s.loan.amount_overdue, outstanding=s.outstanding, paid_total=s.paid_total,
            stage=s.stage.value, state=s.state.value, days_past_due=self._dpd(),
            assigned_agent=s.assigned_agent, due_date=s.due_date, opened_at=s.opened_at,
            updated_at=self._now(), closed_at=s.closed_at, close_reason=s.close_reason or None,
        )

    def _upsert_search_attributes(self) -> None:
        assert self.s is not None
        s = self.s
        wanted: dict[str, Any] = {
            "stage": s.stage.value, "state": s.state.value, "dpd": self._dpd(),
            "outstanding": int(s.outstanding), "currency": s.loan.currency,
            "agent": s.assigned_agent, "policy": f"{s.policy.name}@{s.policy.version}",
        }
        keys = {"stage": STAGE, "state": CASE_STATE, "dpd": DAYS_PAST_DUE, "outstanding": OUTSTANDING,
                "currency": CURRENCY, "agent": ASSIGNED_AGENT, "policy": POLICY_VERSION}
        updates = []
        for name, value in wanted.items():
            if self._sa.get(name, object()) != value:
                key = keys[name]
                updates.append(key.value_unset() if value is None else key.value_set(value))
                self._sa[name] = value
        if updates:
            workflow.upsert_search_attributes(updates)

    # --------------------------------------------------------------- signals

    @workflow.signal
    def pay(self, payment: PaymentInput) -> None:
        """From the loan system. Fire-and-forget: a repeated payment id is ignored."""
        if self.s is None:
            self._inbox.append(payment)  # applied once the policy (and its payment order) is known
        else:
            self._apply_payment(payment)

    def _ready(self) -> bool:
        return self.s is not None

    # --------------------------------------------------------------- updates

    async def _until_ready(self) -> CaseData:
        await workflow.wait_condition(self._ready)
        assert self.s is not None
        return self.s

    def _result(self, message: str) -> UpdateResult:
        assert self.s is not None
        self._wake = True
        return UpdateResult(accepted=True, message=message, outstanding=self.s.outstanding,
                            currency=self.s.loan.currency)

    def _validate(self, check: Any, *args: Any) -> None:
        if self.s is None:
            return  # checked again by the handler once the case has opened
        try:
            check(self.s, *args)
        except negotiation.Refusal as err:
            raise _refuse(err) from None

    @workflow.update
    async def promise(self, p: PromiseInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_promise, p, self._today())
        if s.promise is not None and s.promise.status == "open":
            s.promise.status = "cancelled"
            self._event("promise_cancelled", "earlier promise replaced", actor=p.agent)
        s.promise = PromiseState(agent=p.agent, amount=p.amount, promised_date=p.promised_date,
                                 made_at=self._now(), paid_before=s.paid_total)
        s.assigned_agent = p.agent
        self._event("promise", f"promise to pay {p.amount} {p.currency} by {p.promised_date}",
                    actor=p.agent, detail={"amount": str(p.amount), "date": p.promised_date.isoformat()})
        self._notify("promise_confirmation", ["sms"], {"promised_amount": format_amount(p.amount),
                                                       "promised_date": p.promised_date.isoformat()})
        return self._result(f"promise recorded: {p.amount} {p.currency} by {p.promised_date}; escalation paused")

    @promise.validator
    def _check_promise(self, p: PromiseInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_promise, p, self._today())

    @workflow.update
    async def plan(self, p: PlanInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_plan, p, self._today())
        s.plan = PlanState(agent=p.agent, installments=list(p.installments), made_at=self._now(),
                           paid_before=s.paid_total)
        s.assigned_agent = p.agent
        self._event("plan", f"installment plan of {len(p.installments)} installments agreed",
                    actor=p.agent, detail={"installments": [
                        {"amount": str(i.amount), "due_date": i.due_date.isoformat()} for i in p.installments]})
        return self._result(f"plan recorded: {len(p.installments)} installments; escalation paused")

    @plan.validator
    def _check_plan_update(self, p: PlanInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_plan, p, self._today())

    @workflow.update
    async def extend(self, e: ExtensionInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_extension, e)
        old = s.due_date
        s.due_date = e.new_due_date
        s.assigned_agent = e.agent
        self._event("extension", f"due date extended from {old} to {e.new_due_date}", actor=e.agent,
                    detail={"reason": e.reason})
        return self._result(f"due date extended to {e.new_due_date}")

    @extend.validator
    def _check_extend(self, e: ExtensionInput) -> None:
        self._validate(negotiation.check_extension, e)

    @workflow.update
    async def waive(self, w: WaiverInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_waiver, w)
        s.set_balance(s.balance.waive(w.component, w.amount))
        s.assigned_agent = w.agent
        self._event("waiver", f"{w.amount} {w.currency} of {w.component} waived; outstanding {s.outstanding}",
                    actor=w.agent, detail={"component": w.component, "amount": str(w.amount), "reason": w.reason})
        if s.outstanding <= 0:
            self._notify("payment_receipt", ["sms", "email"], {"excess": ""})
            self._close(CaseState.PAID, "balance cleared by waiver", actor=w.agent)
        return self._result(f"waived {w.amount} {w.currency} of {w.component}")

    @waive.validator
    def _check_waive(self, w: WaiverInput) -> None:
        self._validate(negotiation.check_waiver, w)

    @workflow.update
    async def settle(self, st: SettlementInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_settlement, st, self._today())
        s.settlement = SettlementState(agent=st.agent, amount=st.amount, pay_by=st.pay_by,
                                       made_at=self._now(), paid_before=s.paid_total)
        s.assigned_agent = st.agent
        self._event("settlement", f"settlement of {st.amount} {st.currency} offered, pay by {st.pay_by}",
                    actor=st.agent, detail={"amount": str(st.amount), "pay_by": st.pay_by.isoformat()})
        return self._result(f"settlement recorded: {st.amount} {st.currency} by {st.pay_by}")

    @settle.validator
    def _check_settle(self, st: SettlementInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_settlement, st, self._today())

    @workflow.update
    async def hold(self, h: HoldInput) -> UpdateResult:
        s = await self._until_ready()
        today = self._today()
        self._validate(negotiation.check_hold, h, today)
        review_by = h.review_by or today + timedelta(days=s.policy.settings.hold_review_days)
        s.hold = HoldState(kind=h.kind, actor=h.actor, reason=h.reason, since=self._now(), review_by=review_by)
        self._event("hold", f"{h.kind} hold until review on {review_by}: contact paused", actor=h.actor,
                    detail={"reason": h.reason})
        return self._result(f"{h.kind} hold placed; review by {review_by}")

    @hold.validator
    def _check_hold_update(self, h: HoldInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_hold, h, self._today())

    @workflow.update
    async def resolve(self, r: ResolveHoldInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_resolve)
        assert s.hold is not None
        kind = s.hold.kind
        s.hold = None
        self._event("hold_resolved", f"{kind} hold resolved: {r.resolution}", actor=r.actor,
                    detail={"reason": r.reason})
        return self._result(f"{kind} hold resolved ({r.resolution}); contact resumes")

    @resolve.validator
    def _check_resolve(self, r: ResolveHoldInput) -> None:
        self._validate(negotiation.check_resolve)

    @workflow.update
    async def cease(self, c: CeaseInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_cease)
        s.ceased = True
        self._event("cease", f"borrower asked to cease contact: {c.reason}", actor=c.actor)
        return self._result("contact ceased; only notices the rules allow will be sent")

    @cease.validator
    def _check_cease(self, c: CeaseInput) -> None:
        self._validate(negotiation.check_cease)

    @workflow.update
    async def close(self, c: CloseInput) -> UpdateResult:
        await self._until_ready()
        self._validate(negotiation.check_close, c)
        self._close(CaseState.CLOSED, c.reason, actor=c.actor)
        self._set_stage(Stage.CLOSED)
        return self._result(f"case closed: {c.reason}")

    @close.validator
    def _check_close(self, c: CloseInput) -> None:
        self._validate(negotiation.check_close, c)

    @workflow.update
    async def task_outcome(self, o: TaskOutcomeInput) -> UpdateResult:
        s = await self._until_ready()
        self._check_task(o)
        assert s.open_task is not None
        s.open_task.outcome = o.outcome.value
        s.open_task.agent = o.agent or None
        s.open_task.note = o.note or None
        if o.agent:
            s.assigned_agent = o.agent
        return self._result(f"{s.open_task.kind} outcome recorded: {o.outcome.value}")

    @task_outcome.validator
    def _check_task(self, o: TaskOutcomeInput) -> None:
        if self.s is None:
            return
        t = self.s.open_task
        if t is None or t.task_key != o.task_key:
            raise ApplicationError(f"no open task {o.task_key!r} on this case", type="Refused",
                                   non_retryable=True)
        if t.outcome is not None:
            raise ApplicationError(f"task {o.task_key!r} already has an outcome", type="Refused",
                                   non_retryable=True)

    # --------------------------------------------------------------- queries

    @workflow.query
    def status(self) -> CaseStatus:
        if self.s is None:
            raise ApplicationError("case is still opening")
        s = self.s
        next_action, next_at = self._next_action()
        return CaseStatus(
            loan_id=s.loan.loan_id, state=s.state, stage=s.stage, days_past_due=self._dpd(),
            outstanding=s.outstanding, currency=s.loan.currency, principal=s.principal,
            interest=s.interest, fees=s.fees, paid_total=s.paid_total,
            next_action=next_action, next_action_at=next_at,
            promise=_plain(s.promise) if s.promise and s.promise.status == "open" else None,
            plan=_plain(s.plan) if s.plan and s.plan.status == "active" else None,
            settlement=_plain(s.settlement) if s.settlement and s.settlement.status == "open" else None,
            hold=_plain(s.hold) if s.hold else None, contact_counts=dict(s.contact_counts),
            policy_name=s.policy.name, policy_version=s.policy.version, segment=s.policy.segment,
            rule_pack=s.policy.rule_pack.name, ceased=s.ceased, assigned_agent=s.assigned_agent,
            run_count=s.run_count,
        )

    def _next_action(self) -> tuple[str | None, datetime | None]:
        assert self.s is not None
        s = self.s
        if not s.active:
            return None, None
        if s.open_task is not None:
            return f"awaiting {s.open_task.kind} outcome ({s.open_task.task_key})", s.open_task.due_by
        if s.paused_by is not None:
            return f"paused: {s.paused_by}", None
        pending = [st for st in s.policy.steps if st.id not in s.done_steps]
        if not pending:
            return None, None
        step = min(pending, key=self._step_time)
        return f"{step.id} ({step.kind})", self._step_time(step)

    @workflow.query
    def timeline(self) -> list[TimelineEvent]:
        return list(self.s.timeline) if self.s is not None else []


def _plain(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, (Decimal, date, datetime)) else v) for k, v in asdict(obj).items()}
