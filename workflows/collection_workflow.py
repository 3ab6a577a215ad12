"""One durable workflow per overdue loan: reminders, calls, negotiation, escalation, write-off.

The workflow follows the ladder of the policy it pinned when it started, contacting the borrower
only when the rule pack allows, pausing while a promise, plan, settlement or hold is open, and
closing when the loan is paid, settled, closed or written off. Every decision is recorded.

Layers, each calling only the ones below it:
- the case's state, ledger, clock and ladder decisions (`case_state`, `ledger`, `clock`, `ladder`,
  `addresses`) and the case itself with its record (`case`): pure;
- payments and arrangements (`arrangements`, `negotiation`): pure; the effects a case has
  (`effects`, `simulation`) and its durable waits (`timers`);
- messages (`follow_ups`, `contacts`), then calls and visits (`agent_tasks`) and legal steps
  (`legal_steps`), and the recorder (`recorder`);
- the handlers (`handler_base`; `handlers` for the case, `agency_handlers` for placements,
  `case_views` for what the status query shows), the run loop (`case_run`) and this workflow,
  which opens the case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from contracts.activity_io import RESOLVE_POLICY
    from contracts.case_io import CollectionInput
    from contracts.loan_rules import FieldProblem, check_start_input
    from contracts.messages import CaseResult, CaseState
    from contracts.names import CASE_STATE, WORKFLOW_TYPE
    from contracts.policy import ResolvedPolicy
    from workflows.agency_handlers import AgencyHandlers
    from workflows.case import Case
    from workflows.case_run import CaseRun, case_result
    from workflows.case_state import CaseData
    from workflows.effects import effects_for, run_db
    from workflows.handlers import CaseHandlers
    from workflows.runtime import TemporalRuntime


@dataclass
class CaseInput(CollectionInput):
    """The start input plus the state a case carries through continue-as-new (same JSON shape)."""

    state: CaseData | None = None


# Executions from before this patch took any input the data converter decoded (and one it could
# not decode failed its workflow task again and again). Since it, a start input that breaks the
# loan-file rules (contracts/loan_rules.py) ends the workflow at once as failed, naming the field,
# with CollectionState=failed so that it can be found.
INPUT_CHECK_PATCH = "start-input-checked"
# The policy lookup is a local activity. When it outlasts a workflow task, its result reaches the
# workflow in a later task the first time than on replay, so `workflow.now()` right after it
# differed between the two: the clock origin (a second of real time is hours of a compressed policy
# day) and every decision taken in that task then diverged, and a paid case's status query failed
# with a nondeterminism error under load. The case now opens only after a short durable timer,
# whose firing time is the same in both.
STEADY_OPEN_PATCH = "open-after-a-timer"


def _decode(raw: RawValue) -> tuple[CaseInput | None, FieldProblem | None]:
    """The input, and what is wrong with it (checked as any client may send it: plain JSON)."""
    try:
        inp: CaseInput | None = workflow.payload_converter().from_payload(raw.payload, CaseInput)
    except Exception:  # pydantic's ValidationError, or no JSON at all
        inp = None
    if inp is not None and inp.state is not None:
        return inp, None  # continued as new: checked when it started
    try:
        data = json.loads(raw.payload.data)
    except ValueError:
        return inp, FieldProblem("input", "is not JSON")
    try:
        check_start_input(data, workflow.now().date())
    except FieldProblem as problem:
        return inp, problem
    if inp is None:
        return None, _decoding_problem(raw)
    return inp, None


def _decoding_problem(raw: RawValue) -> FieldProblem:
    """Where the data converter refused the input: the field's path, never its value."""
    try:
        pydantic.TypeAdapter(CaseInput).validate_json(raw.payload.data)
    except pydantic.ValidationError as err:
        first = err.errors(include_input=False, include_url=False)[0]
        path = ".".join(str(part) for part in first["loc"]) or "input"
        return FieldProblem(path, str(first["msg"]))
    return FieldProblem("input", "does not decode as a case input")


@workflow.defn(name=WORKFLOW_TYPE)
class CollectionWorkflow(CaseHandlers, AgencyHandlers):
    @workflow.init
    def __init__(self, raw: RawValue) -> None:
        inp, self._input_problem = _decode(raw)
        self._input = inp
        case: Case | None = None
        if inp is None:
            pass
        elif inp.state is not None:
            inp.state.run_count += 1
            case = Case(inp.state, TemporalRuntime())
        elif inp.policy is not None and self._input_problem is None:
            case = Case.open(inp.loan, inp.policy, TemporalRuntime(), simulate=inp.simulate,
                             behaviour=inp.behaviour, seed=inp.seed)
        self._start_handlers(case)

    @workflow.run
    async def run(self, raw: RawValue) -> CaseResult:
        problem, inp = self._input_problem, self._input
        if problem is not None and (inp is None or workflow.patched(INPUT_CHECK_PATCH)):
            if inp is None or not inp.simulate:
                workflow.upsert_search_attributes([CASE_STATE.value_set(CaseState.FAILED.value)])
            raise ApplicationError(f"invalid case input: {problem}", type="InvalidCaseInput",
                                   non_retryable=True)
        if inp is None:  # unreachable: a problem is always found for an undecodable input
            raise ApplicationError("invalid case input", type="InvalidCaseInput",
                                   non_retryable=True)
        case = self._case
        if case is None and inp.policy is not None:  # an old execution: opened regardless
            case = Case.open(inp.loan, inp.policy, TemporalRuntime(), simulate=inp.simulate,
                             behaviour=inp.behaviour, seed=inp.seed)
        if case is None:
            # Asked before the lookup, in the first task, which is the same on replay.
            steady = workflow.patched(STEADY_OPEN_PATCH)
            policy = await run_db(RESOLVE_POLICY, inp.loan, result_type=ResolvedPolicy,
                                  start_to_close_timeout=timedelta(seconds=30), read_only=True)
            if steady:
                await workflow.sleep(timedelta(milliseconds=1))
            case = Case.open(inp.loan, policy, TemporalRuntime(), simulate=inp.simulate,
                             behaviour=inp.behaviour, seed=inp.seed)
        self._open(case)
        s = case.s
        # The effects are chosen here, once: the mode was fixed when the case opened.
        if await CaseRun(case, effects_for(s), workflow.info().workflow_id).run():
            workflow.continue_as_new(CaseInput(loan=s.loan, policy=s.policy, state=s))
        return case_result(s)
