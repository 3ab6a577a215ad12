"""Following up a message the provider accepted but that is not yet a contact (contracts/channels.py
`follow_up`, FOLLOW_UP_PATCH in workflows/contacts.py): the provider's word on it, and waiting
for a WeCom staff member's confirmation. The message path calls this; it calls nothing back.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import FollowUpInput, FollowUpResult, SendResult
    from contracts.channels import ChannelSpec
    from contracts.policy import Step
    from policies import compliance
    from workflows.case import Case
    from workflows.effects import CaseEffects
    from workflows.timers import sleep_until


class FollowUps:
    """The follow-ups of one case's accepted messages."""

    def __init__(self, case: Case, effects: CaseEffects) -> None:
        self.case = case
        self.effects = effects

    async def ask(self, spec: ChannelSpec, result: SendResult, attempt_key: str,
                  action: str) -> FollowUpResult | None:
        """The provider's word on an accepted message; None when it gave none in time."""
        assert spec.follow_up is not None
        inp = FollowUpInput(channel=spec.name, provider_id=result.provider_id or "",
                            action=action, outbox_key=attempt_key,
                            loan_id=self.case.s.loan.loan_id)
        try:
            return await self.effects.follow_up(spec.follow_up, inp)
        except ActivityError:
            return None

    async def await_confirmation(self, step: Step | None, step_id: str, spec: ChannelSpec,
                                 result: SendResult, attempt_key: str) -> FollowUpResult:
        """Check at once, remind once halfway to the deadline, cancel at the deadline (or when
        the case closes first)."""
        case, s = self.case, self.case.s
        hours = (step.deadline_days * 24 if step is not None and step.deadline_days
                 else s.policy.settings.wecom_confirm_hours)
        start = case.now()
        deadline = start + timedelta(hours=hours)
        local_deadline = compliance.local(deadline, s.loan.timezone)
        case.event("contact_pending",
                   f"{spec.name} message awaiting the staff member's confirmation until "
                   f"{local_deadline:%Y-%m-%d %H:%M} local",
                   detail={"step": step_id, "channel": spec.name})
        unknown = FollowUpResult("pending", None, "no answer from WeCom")
        checked = await self.ask(spec, result, attempt_key, "check") or unknown
        for wake, remind in ((start + (deadline - start) / 2, True), (deadline, False)):
            if checked.state != "pending":
                return checked
            await sleep_until(case, wake, lambda: not s.active)
            checked = await self.ask(spec, result, attempt_key, "check") or unknown
            if checked.state == "pending" and remind and s.active:
                await self.ask(spec, result, attempt_key, "remind")
                case.event("contact_reminded",
                           f"{spec.name} staff member reminded to confirm the message",
                           detail={"step": step_id, "channel": spec.name})
            if not s.active:
                break
        if checked.state != "pending":
            return checked
        await self.ask(spec, result, attempt_key, "cancel")
        why = "the case closed first" if not s.active else (
            f"unconfirmed at {local_deadline:%Y-%m-%d %H:%M} local; task cancelled")
        return FollowUpResult("not_delivered", "failed", why)
