"""Legal steps: the legal action recorded, the hand-off to an agency for an agency placement,
then the step's letters sent through the message path (workflows/contacts.py)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import LegalInput
    from contracts.policy import Step
    from workflows import placement
    from workflows.contacts import DOCUMENT_CHANNEL, CaseContacts


class LegalSteps:
    """Legal steps of one case; their letters go out as its messages."""

    def __init__(self, contacts: CaseContacts) -> None:
        self.contacts = contacts
        self.case = contacts.case
        self.effects = contacts.effects
        self.workflow_id = contacts.workflow_id

    async def legal(self, step: Step) -> None:
        case, s = self.case, self.case.s
        action = step.action or "lawyer_letter"
        now = case.now()
        documents = [{
            "type": action, "template": step.template, "locale": s.loan.locale,
            "amount": str(s.outstanding), "currency": s.loan.currency,
            "days_past_due": case.dpd(), "generated_at": now.isoformat(),
        }]
        await self.effects.record_legal_action(
            LegalInput(key=f"{self.workflow_id}/{step.id}", loan_id=s.loan.loan_id,
                       action=action, created_at=now, documents=documents),
        )
        case.event("legal_action", f"legal action recorded: {action}",
                   detail={"step": step.id, "action": action})
        extra: dict[str, str] = {}
        if action == "agency_placement" and not s.simulate and case.runtime.patched(
                placement.PLACEMENT_PATCH):
            placed, _ = await placement.place(case, actor="policy", reason=f"step {step.id}",
                                              channels=[])
            if placed is None:
                return  # no agency takes it: no notice of a placement that did not happen
            extra = {"agency_name": placed.agency_name}
        for name in step.channels or [DOCUMENT_CHANNEL]:
            await self.contacts.contact(step, name, step.template or action, extra=extra)
