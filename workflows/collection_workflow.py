"""One durable workflow per overdue loan: reminders, calls, negotiation, escalation, write-off.

The workflow follows the ladder of the policy it pinned when it started, contacting the borrower
only when the rule pack allows, pausing while a promise, plan, settlement or hold is open, and
closing when the loan is paid, settled, closed or written off. Every decision is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policies import compliance
    from contracts.activity_io import (
        RECORD,
        RECORD_CONTACT,
        RESOLVE_POLICY,
        CaseSnapshot,
        ContactRecord,
        RecordBatch,
        StageChange,
    )
    from contracts.case_io import CollectionInput
    from workflows.case_state import (
        CaseData,
    )
    from workflows.ledger import balance_of
    from contracts.messages import (
        CaseResult,
        CaseState,
        LoanInput,
        PaymentInput,
        Stage,
    )
    from contracts.policy import ResolvedPolicy, Step
    from contracts.names import (
        ASSIGNED_AGENT,
        CASE_STATE,
        CURRENCY,
        DAYS_PAST_DUE,
        OUTSTANDING,
        POLICY_VERSION,
        STAGE,
    )
    from contracts.messages import STAGE_ORDER
from workflows.case_arrangements import CaseArrangements
from workflows.case_base import (
    DB_OPTIONS,
    _key,
)
from workflows.case_contacts import CaseContacts
from workflows.case_handlers import CaseHandlers


@dataclass
class CaseInput(CollectionInput):
    """The start input plus the state a case carries through continue-as-new (same JSON shape)."""

    state: CaseData | None = None



@workflow.defn
class CollectionWorkflow(CaseHandlers, CaseArrangements, CaseContacts):
    @workflow.init
    def __init__(self, inp: CaseInput) -> None:
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
            self.s = self._new_case(inp.loan, inp.policy, simulate=inp.simulate)

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseResult:
        if self.s is None:
            policy = await self._db(RESOLVE_POLICY, inp.loan, result_type=ResolvedPolicy,
                                    start_to_close_timeout=timedelta(seconds=30), read_only=True)
            self.s = self._new_case(inp.loan, policy, simulate=inp.simulate)
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
            workflow.continue_as_new(CaseInput(loan=s.loan, policy=s.policy, state=s))
        return CaseResult(
            loan_id=s.loan.loan_id, state=s.state, stage=s.stage, outstanding=s.outstanding,
            currency=s.loan.currency, paid_total=s.paid_total, excess=s.excess,
            close_reason=s.close_reason, timeline=s.timeline if s.simulate else None,
        )

    def _new_case(self, loan: LoanInput, policy: ResolvedPolicy, *, simulate: bool = False) -> CaseData:
        real_now = workflow.now()
        balance = balance_of(loan.amount_overdue, loan.interest, loan.fees)
        s = CaseData(
            loan=loan, policy=policy, clock_origin=real_now, opened_at=real_now,
            due_date=loan.due_date, principal=balance.principal, interest=balance.interest,
            fees=balance.fees, borrower_key=loan.borrower_id or f"p:{_key(loan.phone)}",
            simulate=simulate,
        )
        self.s = s
        s.stage = self._stage_for_dpd()
        self._event(
            "case_opened",
            f"{'simulated ' if simulate else ''}case opened under policy {policy.name} {policy.version}, "
            f"segment {policy.segment}, "
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


    # ------------------------------------------------------------- recording

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
            if s.simulate:  # nothing to write: the timeline is the record
                s.pending_events.clear()
                s.pending_payments.clear()
                s.pending_stage_changes.clear()
                s.snapshot_dirty = False
                continue
            batch = RecordBatch(case=self._snapshot(), events=s.pending_events[:],
                                payments=s.pending_payments[:], stage_changes=s.pending_stage_changes[:])
            if self._contacts_in_batch():
                batch.contacts = contacts
            else:
                for rec in contacts:
                    await workflow.execute_activity(RECORD_CONTACT, rec, **DB_OPTIONS)
            s.snapshot_dirty = False
            await self._db(RECORD, batch)
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

