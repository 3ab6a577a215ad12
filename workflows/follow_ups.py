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
    from workflows.withdrawals import withdrawal

# Executions from before this patch waited for a WeCom staff member's confirmation until the
# deadline whatever happened meanwhile, short of the case closing: a cease-contact request or a
# hold left the task for the member to send, and an unconfirmed one fell back to SMS at its
# deadline even under a hold. Since it, a pending task is withdrawn (cancelled) as soon as the
# borrower asks to cease contact, a hold is placed or the case is placed with an agency (what
# withdraws an agent's call, workflows/agent_tasks.py), and the step does not fall back.
WITHDRAW_PATCH = "wecom-pending-withdrawn"
WITHDRAWN = "withdrawn"  # how a withdrawn task's detail (and the contact row's reason) begins


class FollowUps:
    """The follow-ups of one case's accepted messages."""

    def __init__(self, case: Case, effects: CaseEffects) -> None:
        self.case = case
        self.effects = effects
        # The rule of the last task `await_confirmation` withdrew (WITHDRAW_PATCH), else None.
        self.withdrawn_rule: str | None = None

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
        the case closes first, or, since WITHDRAW_PATCH, as soon as `withdrawal` says so)."""
        case, s = self.case, self.case.s
        self.withdrawn_rule = None
        withdraws = case.runtime.patched(WITHDRAW_PATCH)

        def stopped() -> bool:
            return not s.active or (withdraws and withdrawal(s) is not None)
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
            await sleep_until(case, wake, stopped)
            checked = await self.ask(spec, result, attempt_key, "check") or unknown
            if checked.state == "pending" and remind and not stopped():
                await self.ask(spec, result, attempt_key, "remind")
                case.event("contact_reminded",
                           f"{spec.name} staff member reminded to confirm the message",
                           detail={"step": step_id, "channel": spec.name})
            if stopped():
                break
        if checked.state != "pending":
            return checked
        await self.ask(spec, result, attempt_key, "cancel")
        withdrawn = withdrawal(s) if withdraws and s.active else None
        if withdrawn is not None:
            self.withdrawn_rule = withdrawn[0]
            return FollowUpResult("not_delivered", "failed",
                                  f"{WITHDRAWN}: {withdrawn[1]}; task cancelled")
        why = "the case closed first" if not s.active else (
            f"unconfirmed at {local_deadline:%Y-%m-%d %H:%M} local; task cancelled")
        return FollowUpResult("not_delivered", "failed", why)
