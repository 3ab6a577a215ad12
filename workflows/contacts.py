"""Reaching the borrower by message, inside the rules: the send path, clearing to contact, the
one fallback, the follow-ups of WeCom and voice, suppressed reservations.

Channels come from the channel table (`contracts/channels.py`): the address a message goes to,
the key the caps count it under, the activity that sends it and where a step falls back when a
channel cannot be used. Every effect goes through the case's effects (workflows/effects.py).
Agent calls and visits (workflows/agent_tasks.py) and legal steps (workflows/legal_steps.py)
go through this path; it imports neither.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import (
        NOT_RESERVED,
        OUTSIDE_WINDOW,
        ContactDecision,
        ContactRequest,
        SendInput,
        SendResult,
        SendWindow,
    )
    from contracts.channels import ChannelSpec, channel
    from contracts.policy import Step
    from policies import compliance
    from workflows import addresses
    from workflows.case import Case
    from workflows.case_state import CaseData, SentMessage
    from workflows.contact_records import ContactRecords
    from workflows.effects import CaseEffects
    from workflows.follow_ups import FollowUps
    from workflows.ledger import format_amount
    from workflows.timers import sleep_until

# Formal notices (the US validation notice, a write-off notice, legal letters) exist as e-mail.
DOCUMENT_CHANNEL = "email"
# Executions from before this patch had two fallbacks: after a provider refusal under the key
# `<step>-fallback` (even after a cease request), and for an unusable channel under the step's
# own key. Since it, one path for both: `<step>-fallback`, never after a cease request.
ONE_FALLBACK_PATCH = "channel-table-fallback"
# Channels whose acceptance is not yet the contact (contracts/channels.py `follow_up`: WeCom's
# staff confirmation, a voice call's outcome) are followed up since this patch (issue 17). No
# execution before it could name them (policy validation refused unknown channels), so none
# replays without it; the marker keeps the rule that a changed command sequence is patched.
FOLLOW_UP_PATCH = "channel-follow-up"
# Executions from before this patch deferred a reservation refused for a suppressed address (an
# SMS opt-out, a number that cannot take SMS, a bounced e-mail address) and tried it again a day
# later, and again, holding the ladder behind that step. Since it, the channel is skipped for this
# step (a `skipped` decision with the suppression's rule, under `<attempt>/skipped`) and the step
# falls back as the channel table says (SMS -> e-mail); the channel is not marked unusable, so
# the next step tries it again (the suppression may have been lifted by then: START).
SUPPRESSED_PATCH = "suppressed-contact-skipped"
# Executions from before this patch sent the notices a case owes (receipts, confirmations: caps
# off) without a reservation, so an SMS opt-out or a suppressed address did not stop them (a text
# after STOP, refused by Twilio with 21610). Since it, a notice asks (check only) whether the
# channel is suppressed; if so it is skipped with the suppression's rule, and the notice goes out
# on its other channels only (a receipt by e-mail after STOP).
NOTICE_SUPPRESSED_PATCH = "notice-suppression-checked"
# The `delivery_failed` signal (workflows/handlers.py) is handled since this patch: an address the
# provider says is unusable is marked so, and a step whose message was not delivered gets its
# fallback once, under `<step>-fallback`, sent by the run loop. A history with that signal from
# before the handler existed replays without it (the signal is ignored, as it was).
DELIVERY_FAILED_PATCH = "delivery-failed-signal"
# Since this patch a send carries its window (SendInput.window) and the send activity checks it
# again right before the provider call: a send retried past the window's end is not made
# (OUTSIDE_WINDOW). The case then withdraws the reservation (no contact was made: the caps stop
# counting it, as for a task withdrawn) and contacts again under `<key>/reopened`, cleared anew:
# deferred to the window's next opening and counted against that day's caps. No execution before
# it was ever answered OUTSIDE_WINDOW, so none replays through this branch.
SEND_WINDOW_PATCH = "send-window-checked-at-send"
REOPENED = "reopened"  # the key suffix of a contact made again after a send outside the window
# Rule codes of the decisions no rule pack makes.
UNUSABLE_ADDRESS_RULE = "case.address_unusable"
PAUSED_RULE = "case.ladder_paused"
PROVIDER_REFUSED_RULE = "provider.refused"
UNCONFIRMED_RULE = "wecom.unconfirmed_by_deadline"
UNDELIVERED_RULE = "provider.undelivered"


class Clearance(Enum):
    """What waiting for the window and the caps came to."""

    CLEAR = "clear"  # contact now
    MOVED_ON = "moved_on"  # the case closed or paused meanwhile
    SUPPRESSED = "suppressed"  # the address is suppressed on this channel: skip it, fall back


def _step(s: CaseData, step_id: str) -> Step | None:
    return next((st for st in s.policy.steps if st.id == step_id), None)


def delivery_fallback(s: CaseData, sent: SentMessage) -> str | None:
    """The channel a ladder message that was not delivered falls back to, or None when there is
    none or its step already sends there."""
    to = addresses.fallback(sent.channel)
    step = _step(s, sent.step_id)
    if to is None or step is None or to in step.channels:
        return None
    return to


class CaseContacts:
    """The messages of one case, within its rule pack."""

    def __init__(self, case: Case, effects: CaseEffects, workflow_id: str) -> None:
        self.case = case
        self.effects = effects
        self.workflow_id = workflow_id
        self.last_decision: ContactDecision | None = None  # the latest reservation granted
        # Each attempt's latest clearance (policy, real instant), for its send to check the window
        # against: keyed, since a signal's fallback may clear another attempt meanwhile.
        self.cleared_at: dict[str, tuple[datetime, datetime]] = {}
        self.follow_ups = FollowUps(case, effects)
        self.rec = ContactRecords(case, effects)
        self._deferrals: dict[str, int] = {}  # attempt key -> deferrals so far (clear_to_contact)

    def blocked(self, step: Step | None, step_id: str, name: str, attempt_key: str) -> bool:
        """Cease-contact and unusable addresses stop a contact before any window or cap."""
        s = self.case.s
        notice = step.notice if step else None
        if s.ceased and not compliance.may_contact_after_cease(s.policy.rule_pack, notice):
            self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/skipped",
                          rule=f"{s.policy.rule_pack.name}.cease_communication",
                          reason="borrower asked to cease contact")
            return True
        unusable = addresses.unusable_reason(s, name)
        if unusable is not None:
            self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/skipped",
                          rule=UNUSABLE_ADDRESS_RULE, reason=unusable)
            return True
        consent_rule = addresses.consent_missing(s, name)
        if consent_rule is not None:
            self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/skipped",
                          rule=consent_rule,
                          reason="no prior express consent to prerecorded calls on the loan")
            return True
        return False

    async def clear_to_contact(self, step_id: str, name: str, attempt_key: str,
                                template: str | None, *, caps: bool = True,
                                refused: ContactDecision | None = None) -> Clearance:
        """Wait for the window and room under the caps; MOVED_ON if the case moved on meanwhile,
        SUPPRESSED (since SUPPRESSED_PATCH) if the address may not be used on this channel.

        Ladder contacts (`caps`) are abandoned when the case closes or pauses; notices the case
        owes (receipts, confirmations) still go out, within the window, after it closes.
        `refused`: the caps' answer to a reservation that travelled with its send or task
        (workflows/carried_writes.py), taken as the first answer.
        """
        case, s = self.case, self.case.s
        pack = s.policy.rule_pack
        # Counted across the returns a refused reservation brings back: each deferral its key.
        deferrals = self._deferrals.get(attempt_key, 0) if refused is not None else 0
        while True:
            if caps and not s.active:
                return Clearance.MOVED_ON
            now = case.now()
            self.cleared_at[attempt_key] = (now, case.real_now())
            at, rule = compliance.next_allowed(now, s.loan.timezone, pack)
            reason = "outside the contact window"
            if at <= now and caps:
                decision = refused or await self.effects.reserve_contact(ContactRequest(
                    key=attempt_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
                    contact_key=addresses.contact_key(s.loan, name), channel=name, step_id=step_id,
                    stage=s.stage.value, template=template, at=now, timezone=s.loan.timezone,
                    rule_pack=pack,
                ))
                refused = None
                if decision.allowed:
                    self.last_decision = decision
                    return Clearance.CLEAR
                if decision.suppressed and case.runtime.patched(SUPPRESSED_PATCH):
                    self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/skipped",
                                  rule=decision.rule, reason=decision.reason, template=template)
                    return Clearance.SUPPRESSED
                at = decision.retry_at or now + timedelta(days=1)
                rule, reason = decision.rule, decision.reason
            elif at <= now:
                if ((case.notice_checks_travel or case.runtime.patched(NOTICE_SUPPRESSED_PATCH))
                        and await self._notice_suppressed(step_id, name, attempt_key, template)):
                    return Clearance.SUPPRESSED
                return Clearance.CLEAR
            refused = None  # the window closed meanwhile: asked again at its next opening
            deferrals += 1
            self._deferrals[attempt_key] = deferrals
            local_at = compliance.local(at, s.loan.timezone)
            self.rec.note(step_id, name, "deferred", key=f"{attempt_key}/deferred/{deferrals}",
                          rule=rule or pack.window_rule,
                          reason=f"{reason}; deferred to {local_at:%Y-%m-%d %H:%M} local",
                          template=template)
            if not caps:
                await sleep_until(case, at, lambda: False)
                continue
            paused_before = s.paused_by

            def moved_on(before: str | None = paused_before) -> bool:
                return not s.active or s.paused_by != before

            await sleep_until(case, at, moved_on)
            if s.active and s.paused_by is not None and paused_before is None:
                self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/paused",
                              rule=PAUSED_RULE, reason=f"ladder paused by {s.paused_by}")
                return Clearance.MOVED_ON

    async def _notice_suppressed(self, step_id: str, name: str, attempt_key: str,
                                 template: str | None) -> bool:
        """Whether a notice the case owes (a receipt, a confirmation) may not use this channel:
        the caps do not hold notices back, but an opt-out or a suppressed address does
        (NOTICE_SUPPRESSED_PATCH). Asked as a check only, so nothing is written and the caps'
        answer is ignored; a suppressed channel is recorded as skipped with the rule. Since
        NOTICE_CHECK_PATCH the check travels with the send (a provisional answer here; the send
        comes back NOT_RESERVED if the channel is suppressed)."""
        s = self.case.s
        decision = await self.effects.reserve_contact(ContactRequest(
            key=attempt_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=addresses.contact_key(s.loan, name), channel=name, step_id=step_id,
            stage=s.stage.value, template=template, at=self.case.now(),
            timezone=s.loan.timezone, rule_pack=s.policy.rule_pack, check_only=True,
        ), immediate=not self.case.notice_checks_travel)
        if not decision.suppressed:
            return False
        self._skipped(step_id, name, attempt_key, template, decision)
        return True

    def _skipped(self, step_id: str, name: str, attempt_key: str, template: str | None,
                 decision: ContactDecision) -> None:
        """A notice's channel found suppressed: recorded as skipped, with the suppression's rule."""
        self.rec.note(step_id, name, "skipped", key=f"{attempt_key}/skipped", rule=decision.rule,
                      reason=decision.reason, template=template)

    async def validation_notice_first(self) -> None:
        """Where the pack requires it, the validation notice goes with the first communication."""
        s = self.case.s
        if s.policy.rule_pack.validation_notice and not s.validation_notice_sent:
            s.validation_notice_sent = True
            await self.contact(None, DOCUMENT_CHANNEL, "validation_notice",
                               key_base="validation-notice")

    async def contact(self, step: Step | None, name: str, template: str, *,
                      key_base: str | None = None, extra: dict[str, str] | None = None,
                      caps: bool = True) -> bool:
        """Send one message on one channel, within the rules; True if it went out."""
        s = self.case.s
        step_id = step.id if step else (key_base or "notice")
        attempt_key = f"{self.workflow_id}/{key_base or step_id}/{name}"
        if self.blocked(step, step_id, name, attempt_key):
            return await self._fall_back(step, name, template, key_base=key_base, extra=extra,
                                         refused=False)
        if template != "validation_notice":
            await self.validation_notice_first()
        spec = channel(name)
        refused: ContactDecision | None = None
        while True:
            clearance = await self.clear_to_contact(step_id, name, attempt_key, template,
                                                    caps=caps, refused=refused)
            if clearance is Clearance.SUPPRESSED:
                return await self._fall_back(step, name, template, key_base=key_base,
                                             extra=extra, refused=False)
            if clearance is not Clearance.CLEAR:
                return False
            if spec.activity is None:
                raise LookupError(f"channel {name!r} has no send activity")
            # Since CARRY_PATCH the record of a message sent goes with it (not for channels
            # whose acceptance is not yet the contact: their record waits for the follow-up).
            on_sent = (self.rec.sent(step_id, name, template, attempt_key)
                       if self.case.carry and not spec.follow_up else None)
            result = await self.effects.send(
                spec.activity,
                SendInput(
                    outbox_key=attempt_key, loan_id=s.loan.loan_id, channel=name,
                    to=addresses.address(s.loan, name), template=template,
                    locale=s.loan.locale, context=self._template_context(extra or {}),
                    contact_key=attempt_key, borrower_ref=s.loan.borrower_ref,
                    window=self._send_window(attempt_key),
                    on_sent=on_sent[1] if on_sent is not None else None,
                ),
                timedelta(seconds=s.policy.settings.send_timeout_seconds),
            )
            if result.status != NOT_RESERVED:
                break
            if not caps and result.decision is not None:  # its check found it suppressed
                self._skipped(step_id, name, attempt_key, template, result.decision)
                return await self._fall_back(step, name, template, key_base=key_base,
                                             extra=extra, refused=False)
            refused = result.decision  # deferred as if asked before the send
        if (result.status == OUTSIDE_WINDOW
                and self.case.runtime.patched(SEND_WINDOW_PATCH)):
            return await self._reopened(step, step_id, name, template, attempt_key,
                                        key_base=key_base, extra=extra, caps=caps)
        if result.status == "sent":
            s.sent_messages[attempt_key] = SentMessage(
                step_id=step.id if step else "", channel=name, template=template,
                extra=dict(extra or {}))
        if (result.status == "sent" and spec.follow_up
                and self.case.runtime.patched(FOLLOW_UP_PATCH)):
            return await self._followed_up(step, step_id, spec, template, attempt_key, result,
                                           key_base=key_base, extra=extra)
        if result.status == "sent":
            s.contact_counts[name] = s.contact_counts.get(name, 0) + 1
            if on_sent is None:
                staged, batch = self.rec.sent(step_id, name, template, attempt_key)
                self.case.note(staged)
                self.effects.contact_decided(batch.contacts[0])
            else:
                self.case.happened(on_sent[0])
                self.effects.sent_records(on_sent[1])
            return True
        reason = f"provider refused: {result.error_code}"
        self.rec.note(step_id, name, "failed", key=attempt_key, rule=PROVIDER_REFUSED_RULE,
                      template=template, outcome="failed", reason=reason)
        s.mark_unusable(spec.address_field, reason)
        return await self._fall_back(step, name, template, key_base=key_base, extra=extra,
                                     refused=True)

    def _send_window(self, attempt_key: str) -> SendWindow | None:
        """The window the send checks again before it goes out: its clearance's."""
        cleared = self.cleared_at.pop(attempt_key, None)
        if cleared is None:
            return None
        s = self.case.s
        decided_at, decided_real = cleared
        return SendWindow(rule_pack=s.policy.rule_pack, timezone=s.loan.timezone,
                          decided_at=decided_at, decided_real=decided_real)

    async def _reopened(self, step: Step | None, step_id: str, name: str, template: str,
                        attempt_key: str, *, key_base: str | None, extra: dict[str, str] | None,
                        caps: bool) -> bool:
        """A send not made because the window had closed by the time it would have gone out
        (SEND_WINDOW_PATCH): the reservation is withdrawn, and the message is contacted again
        under a key of its own, cleared anew (the next opening, that day's caps)."""
        rule = self.case.s.policy.rule_pack.window_rule
        self.rec.note(step_id, name, "withdrawn", key=attempt_key, rule=rule, template=template,
                      reason="not sent: the window had closed when the send would have gone out "
                             "(after provider retries); contacted again from the next opening, "
                             "if the case still calls for it")
        base = f"{key_base or step_id}/{REOPENED}"
        return await self.contact(step, name, template, key_base=base, extra=extra, caps=caps)

    async def _fall_back(self, step: Step | None, name: str, template: str, *,
                         key_base: str | None, extra: dict[str, str] | None, refused: bool) -> bool:
        """A ladder step that cannot use a channel (unusable, or the provider just refused the
        address) tries the table's fallback for it, unless the step already sends there or contact
        has ceased. Only SMS falls back (to e-mail): the formal notice, legal letters and the
        write-off notice exist as e-mail only."""
        s = self.case.s
        to = addresses.fallback(name)
        if to is None or step is None or to in step.channels or addresses.unusable_reason(s, to):
            return False
        if self.case.runtime.patched(ONE_FALLBACK_PATCH):
            if s.ceased:
                return False
            key = f"{key_base or step.id}-fallback"
        elif refused:  # executions from before the patch: the refusal path, ceased or not
            key = f"{step.id}-fallback"
        else:  # ... and the unusable-channel path, under the step's own key
            if s.ceased:
                return False
            key = key_base or step.id
        return await self.contact(step, to, template, key_base=key, extra=extra)

    async def after_delivery_failure(self, outbox_key: str) -> None:
        """A ladder message the provider accepted and then could not deliver (the
        `delivery_failed` signal, DELIVERY_FAILED_PATCH): its step's fallback, once, under the
        key the fallback path uses (`<step>-fallback`), so a step that already fell back (or a
        repeated report) sends nothing more."""
        s = self.case.s
        sent = s.sent_messages.get(outbox_key)
        if sent is None or (to := delivery_fallback(s, sent)) is None:
            return
        step = _step(s, sent.step_id)
        if step is None:
            return
        key = f"{self.workflow_id}/{step.id}-fallback/{to}"
        if key in s.sent_messages:
            return
        if s.paused_by is not None:
            self.rec.note(step.id, to, "skipped", key=f"{key}/paused", rule=PAUSED_RULE,
                          reason=f"ladder paused by {s.paused_by}")
            return
        await self._fall_back(step, sent.channel, sent.template, key_base=None,
                              extra=sent.extra or None, refused=True)

    # ------------------------------------------- WeCom confirmations, voice outcomes

    async def _followed_up(self, step: Step | None, step_id: str, spec: ChannelSpec,
                           template: str, attempt_key: str, result: SendResult, *,
                           key_base: str | None, extra: dict[str, str] | None) -> bool:
        """A message the provider accepted but that is not yet a contact: a WeCom task waits for
        its staff member's confirmation (reminded once, cancelled at the deadline, then the step
        falls back); a voice call is recorded with how it ended."""
        s, name = self.case.s, spec.name
        pack = s.policy.rule_pack.name
        if not spec.confirmation:
            checked = await self.follow_ups.ask(spec, result, attempt_key, "check")
            outcome = checked.outcome if checked is not None else "unanswered"
            detail = checked.detail if checked is not None else "no call status in time"
            s.contact_counts[name] = s.contact_counts.get(name, 0) + 1
            self.rec.note(step_id, name, "sent", key=attempt_key, rule=f"{pack}.window_and_caps",
                          template=template, outcome=outcome,
                          reason=f"{template} call {outcome} ({detail}), within the {pack} "
                                 f"window and caps")
            self.case.event("call_outcome", f"{name} reminder {outcome}: {detail}",
                            rule=f"{pack}.window_and_caps",
                            detail={"step": step_id, "channel": name, "outcome": outcome,
                                    "call_status": detail})
            return True
        checked = await self.follow_ups.await_confirmation(step, step_id, spec, result, attempt_key)
        if checked.state == "delivered":
            s.contact_counts[name] = s.contact_counts.get(name, 0) + 1
            self.rec.note(step_id, name, "sent", key=attempt_key, rule=f"{pack}.window_and_caps",
                          template=template, outcome="sent",
                          reason=f"{template} sent after staff confirmation, within the {pack} "
                                 f"window and caps")
            return True
        not_contact = checked.detail.startswith("wecom_84061")
        rule = PROVIDER_REFUSED_RULE if not_contact else UNCONFIRMED_RULE
        reason = ("not a WeCom external contact of the lender (wecom_84061)" if not_contact
                  else f"not confirmed by the lender's staff member: {checked.detail}")
        withdrawn_rule = self.follow_ups.withdrawn_rule  # follow_ups.WITHDRAW_PATCH
        if withdrawn_rule is not None:
            rule, reason = withdrawn_rule, checked.detail
        self.rec.note(step_id, name, "failed", key=attempt_key, rule=rule, template=template,
                      outcome="failed", reason=reason)
        if not_contact:
            s.mark_unusable(spec.address_field, reason)
        if not s.active or withdrawn_rule is not None:
            return False
        return await self._fall_back(step, name, template, key_base=key_base, extra=extra,
                                     refused=True)

    def _template_context(self, extra: dict[str, str]) -> dict[str, Any]:
        case, s = self.case, self.case.s
        loan = s.loan
        today = case.today()
        context: dict[str, Any] = {
            "lender": loan.lender, "borrower_name": loan.borrower_name, "loan_ref": loan.loan_id,
            "amount": format_amount(s.outstanding), "currency": loan.currency,
            "days_overdue": case.dpd(), "due_date": s.due_date.isoformat(),
            "days_before_due": max(0, -case.dpd()),
            "opt_out": s.policy.rule_pack.opt_out_required,
            "validation_notice": False,
            "dispute_by": (today + timedelta(days=30)).isoformat(),
            "respond_by": (today + timedelta(days=14)).isoformat(),
            "agency_name": "our appointed collection agency",
            "paid_amount": format_amount(s.paid_total), "excess": "",
        }
        context.update(extra)
        return context
