"""A case's contact decisions as it records them: each an event and a row of `contacts`, noted to
be written, or staged to be written with the send it describes (workflows/carried_writes.py)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import ContactRecord, RecordBatch
    from workflows import addresses
    from workflows.case import Case, StagedEvent
    from workflows.effects import CaseEffects


class ContactRecords:
    def __init__(self, case: Case, effects: CaseEffects) -> None:
        self.case = case
        self.effects = effects

    def note(self, step_id: str, name: str, decision: str, *, key: str, rule: str | None,
                reason: str, template: str | None = None, outcome: str | None = None) -> None:
        staged, rec = self.staged(step_id, name, decision, key=key, rule=rule, reason=reason,
                                   template=template, outcome=outcome)
        self.case.note(staged)
        self.effects.contact_decided(rec)

    def staged(self, step_id: str, name: str, decision: str, *, key: str, rule: str | None,
                reason: str, template: str | None = None, outcome: str | None = None,
                ) -> tuple[StagedEvent, ContactRecord]:
        """A contact decision's event and row, not yet part of the case."""
        case, s = self.case, self.case.s
        staged = case.staged_event(f"contact_{decision}", f"{name} {decision}: {reason}",
                                   rule=rule, detail={"step": step_id, "channel": name})
        return staged, ContactRecord(
            key=key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=addresses.contact_key(s.loan, name), channel=name, step_id=step_id,
            stage=s.stage.value, decision=decision, at=case.now(), template=template,
            rule=rule, reason=reason, outcome=outcome,
        )

    def sent(self, step_id: str, name: str, template: str, attempt_key: str,
              ) -> tuple[StagedEvent, RecordBatch]:
        """The record of a message the provider took: its event, and the batch that writes it."""
        pack = self.case.s.policy.rule_pack.name
        staged, rec = self.staged(step_id, name, "sent", key=attempt_key,
                                   rule=f"{pack}.window_and_caps", template=template,
                                   outcome="sent",
                                   reason=f"{template} sent within the {pack} window and caps")
        return staged, RecordBatch(events=[staged.record], contacts=[rec])
