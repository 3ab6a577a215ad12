"""The run loop of an open case: follow the ladder, settle deadlines, sleep until the next thing.

The top layer beside the handlers: it drives the case (workflows/case.py, workflows/ladder.py,
workflows/arrangements.py) and its contacts, and runs the recorder and the notices beside it.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.messages import CaseResult, CaseState, Stage
    from contracts.policy import Step
    from workflows import arrangements, ladder, placement
    from workflows.agent_tasks import AgentTasks
    from workflows.carried_writes import CARRY_PATCH, NOTICE_CHECK_PATCH
    from workflows.case import Case
    from workflows.case_state import CaseData
    from workflows.contacts import DOCUMENT_CHANNEL, CaseContacts
    from workflows.effects import CaseEffects
    from workflows.legal_steps import LegalSteps
    from workflows.recorder import Recorder
    from workflows.timers import sleep_until


class CaseRun:
    def __init__(self, case: Case, effects: CaseEffects, workflow_id: str) -> None:
        self.case = case
        self.contacts = CaseContacts(case, effects, workflow_id)
        self.tasks = AgentTasks(self.contacts)
        self.legal_steps = LegalSteps(self.contacts)
        self.recorder = Recorder(case, effects, workflow_id)
        # Asked once, as the run starts: a run begun before the patch keeps its shape to the end.
        case.carry = case.runtime.patched(CARRY_PATCH)
        if case.carry:
            effects.carry_with(self.recorder)
            case.notice_checks_travel = case.runtime.patched(NOTICE_CHECK_PATCH)
        self._notices_done = False
        self._placements_done = False

    async def run(self) -> bool:
        """Run until the case closes or its history grows long; True to continue as new."""
        case, s = self.case, self.case.s
        # Records are written and owed notices sent in the background, each in order; a notice
        # waiting for the contact window never holds back the records.
        recorder = asyncio.create_task(self.recorder.run())
        notifier = asyncio.create_task(self._notifier())
        # Since CARRY_PATCH placement rows travel in the record batches.
        placements = None if case.carry else asyncio.create_task(
            placement.write_all(case, lambda: self._placements_done))
        continue_as_new = False
        while s.active:
            if self._history_is_long():
                continue_as_new = True
                break
            await self._advance()
        if not s.active:
            placement.end(self.case, "case_closed")  # closed another way while placed
        self._notices_done = True
        await notifier
        self._placements_done = True
        if placements is not None:
            await placements
        self.recorder.stopping = True
        await recorder
        if self.recorder.has_pending():
            # A run begun before NOTICE_CHECK_PATCH whose recorder stopped early (an action woken
            # with it had taken what it woke for): what it noted since is written now.
            await self.recorder.run()
        await case.runtime.wait_condition(case.runtime.handlers_finished)
        return continue_as_new

    def _history_is_long(self) -> bool:
        return self.case.runtime.history_is_long(self.case.s.policy.settings.max_history_events)

    async def _advance(self) -> None:
        case, s = self.case, self.case.s
        now = case.now()
        wake_times = arrangements.check_deadlines(case, now)
        if not s.active:
            return
        if s.pending_fallbacks:  # queued by the `delivery_failed` signal
            await self.contacts.after_delivery_failure(s.pending_fallbacks[0])
            s.pending_fallbacks.pop(0)
            return
        term_end = placement.check_term(case, now)  # a placement's term is a durable timer
        if term_end is not None:
            wake_times.append(term_end)
        if s.paused_by is None:
            step = case.take_due_step(now)
            if step is not None:
                await self._run_step(step)
                return
            next_time = ladder.next_step_time(s)
            if next_time is not None:
                wake_times.append(next_time)
        case.wake = False
        self.recorder.refresh_dpd()
        await sleep_until(case, min(wake_times) if wake_times else None, lambda: case.wake)

    async def _run_step(self, step: Step) -> None:
        case, s = self.case, self.case.s
        s.done_steps.append(step.id)
        if step.id in s.pull_forward:
            s.pull_forward.remove(step.id)
        case.set_stage(step.stage)
        case.event("step_started", f"step {step.id} ({step.kind}) started",
                   detail={"step": step.id})
        if step.kind == "message":
            for name in step.channels:
                await self.contacts.contact(step, name, step.template or "")
        elif step.kind in ("call", "visit"):
            await self.tasks.task(step)
        elif step.kind == "legal":
            await self.legal_steps.legal(step)
        elif step.kind == "write_off":
            if step.template:
                await self.contacts.contact(step, DOCUMENT_CHANNEL, step.template)
            case.close(CaseState.WRITTEN_OFF, "written off at the end of the ladder")
            case.set_stage(Stage.WRITTEN_OFF)

    async def _notifier(self) -> None:
        """Sends the notices the case owes (receipts, acknowledgements, confirmations) in order."""
        s = self.case.s
        while True:
            await self.case.runtime.wait_condition(
                lambda: bool(s.pending_notices) or self._notices_done)
            if not s.pending_notices:
                return
            notice = s.pending_notices[0]
            if s.placement is not None and notice.template != placement.PLACEMENT_NOTICE:
                # While placed the lender sends nothing: the agency contacts the borrower.
                self.case.event("notice_withheld", f"{notice.template} not sent: placed with "
                                f"agency {s.placement.agency_id}", rule=placement.PLACED_RULE)
                s.pending_notices.pop(0)
                continue
            for name in notice.channels:
                await self.contacts.contact(None, name, notice.template, key_base=notice.key,
                                            extra=notice.extra, caps=False)
            s.pending_notices.pop(0)


def case_result(s: CaseData) -> CaseResult:
    """What a finished run returns (a simulation's with its timeline)."""
    return CaseResult(
        loan_id=s.loan.loan_id, state=s.state, stage=s.stage, outstanding=s.outstanding,
        currency=s.loan.currency, paid_total=s.paid_total, excess=s.excess,
        close_reason=s.close_reason, timeline=s.timeline if s.simulate else None,
    )
