"""One durable workflow per overdue loan: reminders, calls, negotiation, escalation, write-off.

The workflow follows the ladder of the policy it pinned when it started, contacting the borrower
only when the rule pack allows, pausing while a promise, plan, settlement or hold is open, and
closing when the loan is paid, settled, closed or written off. Every decision is recorded.

Layers, each calling only the ones below it:
- the case's state, ledger, clock and ladder decisions (`case_state`, `ledger`, `clock`, `ladder`,
  `addresses`) and the case itself with its record (`case`): pure;
- payments and arrangements (`arrangements`, `negotiation`): pure; the effects a case has
  (`effects`, `simulation`) and its durable waits (`timers`);
- contacts (`contacts`) and the recorder (`recorder`);
- the handlers (`handlers`), the run loop (`case_run`) and this workflow, which opens the case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import RESOLVE_POLICY
    from contracts.case_io import CollectionInput
    from contracts.messages import CaseResult
    from contracts.names import WORKFLOW_TYPE
    from contracts.policy import ResolvedPolicy
    from workflows.case import Case
    from workflows.case_run import CaseRun
    from workflows.case_state import CaseData
    from workflows.effects import effects_for, run_db
    from workflows.handlers import CaseHandlers


@dataclass
class CaseInput(CollectionInput):
    """The start input plus the state a case carries through continue-as-new (same JSON shape)."""

    state: CaseData | None = None


@workflow.defn(name=WORKFLOW_TYPE)
class CollectionWorkflow(CaseHandlers):
    @workflow.init
    def __init__(self, inp: CaseInput) -> None:
        case: Case | None = None
        if inp.state is not None:
            inp.state.run_count += 1
            case = Case(inp.state, workflow.now)
        elif inp.policy is not None:
            case = Case.open(inp.loan, inp.policy, workflow.now, simulate=inp.simulate)
        self._start_handlers(case)

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseResult:
        case = self._case
        if case is None:
            policy = await run_db(RESOLVE_POLICY, inp.loan, result_type=ResolvedPolicy,
                                  start_to_close_timeout=timedelta(seconds=30), read_only=True)
            case = Case.open(inp.loan, policy, workflow.now, simulate=inp.simulate)
        self._open(case)
        s = case.s
        # The effects are chosen here, once: the mode was fixed when the case opened.
        if await CaseRun(case, effects_for(s), workflow.info().workflow_id).run():
            workflow.continue_as_new(CaseInput(loan=s.loan, policy=s.policy, state=s))
        return CaseResult(
            loan_id=s.loan.loan_id, state=s.state, stage=s.stage, outstanding=s.outstanding,
            currency=s.loan.currency, paid_total=s.paid_total, excess=s.excess,
            close_reason=s.close_reason, timeline=s.timeline if s.simulate else None,
        )
