"""Writing out what a case learned: record batches in order, the snapshot, the search attributes."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import CaseSnapshot, RecordBatch
    from contracts.names import (
        ASSIGNED_AGENT,
        CASE_STATE,
        CURRENCY,
        DAYS_PAST_DUE,
        EXPERIMENT_ARM,
        OUTSTANDING,
        POLICY_VERSION,
        STAGE,
    )
    from workflows.case import Case
    from workflows.effects import CaseEffects

_KEYS: dict[str, SearchAttributeKey[Any]] = {
    "stage": STAGE, "state": CASE_STATE, "dpd": DAYS_PAST_DUE, "outstanding": OUTSTANDING,
    "currency": CURRENCY, "agent": ASSIGNED_AGENT, "policy": POLICY_VERSION,
    "arm": EXPERIMENT_ARM,
}


class Recorder:
    """Runs beside the case until told to stop, one transaction per batch."""

    def __init__(self, case: Case, effects: CaseEffects, workflow_id: str) -> None:
        self.case = case
        self.effects = effects
        self.workflow_id = workflow_id
        self.stopping = False
        self._search_attributes: dict[str, Any] = {}  # as last upserted

    def refresh_dpd(self) -> None:
        """Days past due change with the clock alone: the snapshot follows them."""
        if self._search_attributes.get("dpd") != self.case.dpd():
            self.case.s.snapshot_dirty = True

    def has_pending(self) -> bool:
        s = self.case.s
        return bool(s.pending_events or s.pending_payments or s.pending_stage_changes
                    or s.pending_unapplied or self.effects.contacts_pending()
                    or s.snapshot_dirty or (self.case.carry and s.pending_placements))

    async def run(self) -> None:
        s = self.case.s
        while True:
            await self.case.runtime.wait_condition(lambda: self.has_pending() or self.stopping)
            if not self.has_pending():
                # An action woken with it may have taken what was pending (carried writes): since
                # NOTICE_CHECK_PATCH that is no reason to stop; runs before it stopped here.
                if self.stopping or not self.case.notice_checks_travel:
                    return
                continue
            if not self.effects.writes_records:
                self._discard()
                continue
            if self.case.carry:
                # What no action took before the case waited (workflows/carried_writes.py).
                taken = self.take()
                if taken is None:
                    continue
                try:
                    await self.effects.write_records(taken)
                except BaseException:
                    self.restore(taken)
                    raise
                self.written()
                continue
            batch = RecordBatch(case=self.snapshot(), events=s.pending_events[:],
                                payments=s.pending_payments[:],
                                stage_changes=s.pending_stage_changes[:],
                                unapplied=s.pending_unapplied[:])
            await self.effects.add_contacts(batch)
            s.snapshot_dirty = False
            await self.effects.write_records(batch)
            del s.pending_events[:len(batch.events)]
            del s.pending_payments[:len(batch.payments)]
            del s.pending_stage_changes[:len(batch.stage_changes)]
            del s.pending_unapplied[:len(batch.unapplied)]
            self._upsert_search_attributes()

    def _discard(self) -> None:
        """Effects that write nothing (a simulation, the lab) are spared the batch and the
        snapshot: what is pending is done with, as if written."""
        s = self.case.s
        s.snapshot_dirty = False
        for pending in (s.pending_events, s.pending_payments, s.pending_stage_changes,
                        s.pending_unapplied):
            pending.clear()
        if self.case.carry:
            s.pending_placements.clear()
        self._search_attributes["dpd"] = self.case.dpd()

    # ------------------------------------------ the Carrier (workflows/carried_writes.py)

    def take(self) -> RecordBatch | None:
        if not self.has_pending():
            return None
        s = self.case.s
        batch = RecordBatch(case=self.snapshot(), events=s.pending_events[:],
                            payments=s.pending_payments[:],
                            stage_changes=s.pending_stage_changes[:],
                            unapplied=s.pending_unapplied[:],
                            contacts=self.effects.take_contacts(),
                            placements=s.pending_placements[:])
        s.snapshot_dirty = False
        for pending in (s.pending_events, s.pending_payments, s.pending_stage_changes,
                        s.pending_unapplied, s.pending_placements):
            pending.clear()
        return batch

    def restore(self, batch: RecordBatch | None) -> None:
        if batch is None:
            return
        s = self.case.s
        s.pending_events[:0] = batch.events
        s.pending_payments[:0] = batch.payments
        s.pending_stage_changes[:0] = batch.stage_changes
        s.pending_unapplied[:0] = batch.unapplied
        s.pending_placements[:0] = batch.placements
        self.effects.restore_contacts(batch.contacts)
        s.snapshot_dirty = True

    def written(self) -> None:
        self._upsert_search_attributes()

    def snapshot(self) -> CaseSnapshot:
        case, s = self.case, self.case.s
        p = s.policy
        return CaseSnapshot(
            loan_id=s.loan.loan_id, workflow_id=self.workflow_id,
            borrower_key=s.borrower_key, policy_name=p.name, policy_version=p.version,
            segment=p.segment, rule_pack=p.rule_pack.name, currency=s.loan.currency,
            amount_placed=s.loan.amount_overdue, outstanding=s.outstanding, paid_total=s.paid_total,
            stage=s.stage.value, state=s.state.value, days_past_due=case.dpd(),
            assigned_agent=s.assigned_agent, due_date=s.due_date, opened_at=s.opened_at,
            updated_at=case.now(), closed_at=s.closed_at, close_reason=s.close_reason or None,
            experiment=p.experiment, arm=p.arm,
        )

    def _upsert_search_attributes(self) -> None:
        case, s = self.case, self.case.s
        wanted: dict[str, Any] = {
            "stage": s.stage.value, "state": s.state.value, "dpd": case.dpd(),
            "outstanding": int(s.outstanding), "currency": s.loan.currency,
            "agent": s.assigned_agent, "policy": f"{s.policy.name}@{s.policy.version}",
        }
        # Only cases assigned in an experiment carry the key, so no case pinned before experiments
        # existed (none has one) upserts anything new on replay: no patch is needed.
        if s.policy.experiment_arm is not None:
            wanted["arm"] = s.policy.experiment_arm
        updates: list[SearchAttributeUpdate[Any]] = []
        for name, value in wanted.items():
            if self._search_attributes.get(name, object()) != value:
                key = _KEYS[name]
                updates.append(key.value_unset() if value is None else key.value_set(value))
                self._search_attributes[name] = value
        if updates:
            self.effects.upsert_search_attributes(updates)
