"""What an agent does on a case: promise, plan, extend, waive, settle, hold, resolve, cease.

The agent is the key's agent id, never a field of the body. Each answer is the workflow's own; a
refusal is a problem document with the workflow's reason.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.bodies import (
    CeaseBody,
    ExtendBody,
    HoldBody,
    PlanBody,
    PromiseBody,
    ResolveBody,
    SettleBody,
    WaiveBody,
)
from api.deps import Temporal
from api.responses import WRITE_ERRORS
from api.writes import AgentWrite
from contracts.messages import UpdateResult
from service import inputs, updates
from service.values import parse_loan_id

router = APIRouter(prefix="/v1/cases/{loan_id}", tags=["agents"])


def _case(loan_id: str) -> str:
    return parse_loan_id(loan_id, "loan_id")


@router.post("/promise", response_model=UpdateResult, responses=WRITE_ERRORS)
async def promise(loan_id: str, body: PromiseBody, write: AgentWrite,
                  client: Temporal) -> Response:
    """Record a promise to pay: escalation pauses until the date (plus the policy's grace)."""
    case = _case(loan_id)
    arg = inputs.promise_input(write.caller.name, body.amount, body.currency, body.date)
    return await write.update("promise", case, lambda: updates.promise(client, case, arg))


@router.post("/plan", response_model=UpdateResult, responses=WRITE_ERRORS)
async def plan(loan_id: str, body: PlanBody, write: AgentWrite, client: Temporal) -> Response:
    """Agree an installment plan; the installments must add up to the balance."""
    case = _case(loan_id)
    arg = inputs.plan_input(write.caller.name, body.currency,
                            [f"{i.amount}@{i.due_date}" for i in body.installments])
    return await write.update("plan", case, lambda: updates.plan(client, case, arg))


@router.post("/extend", response_model=UpdateResult, responses=WRITE_ERRORS)
async def extend(loan_id: str, body: ExtendBody, write: AgentWrite, client: Temporal) -> Response:
    """Move the due date later; the ladder follows the new date."""
    case = _case(loan_id)
    arg = inputs.extension_input(write.caller.name, body.new_due_date, body.reason)
    return await write.update("extend", case, lambda: updates.extend(client, case, arg))


@router.post("/waive", response_model=UpdateResult, responses=WRITE_ERRORS)
async def waive(loan_id: str, body: WaiveBody, write: AgentWrite, client: Temporal) -> Response:
    """Waive part of the interest or fees."""
    case = _case(loan_id)
    arg = inputs.waiver_input(write.caller.name, body.component, body.amount, body.currency,
                              body.reason)
    return await write.update("waive", case, lambda: updates.waive(client, case, arg))


@router.post("/settle", response_model=UpdateResult, responses=WRITE_ERRORS)
async def settle(loan_id: str, body: SettleBody, write: AgentWrite, client: Temporal) -> Response:
    """Offer a settlement below the balance; paid in time, it closes the case."""
    case = _case(loan_id)
    arg = inputs.settlement_input(write.caller.name, body.amount, body.currency, body.pay_by)
    return await write.update("settle", case, lambda: updates.settle(client, case, arg))


@router.post("/hold", response_model=UpdateResult, responses=WRITE_ERRORS)
async def hold(loan_id: str, body: HoldBody, write: AgentWrite, client: Temporal) -> Response:
    """Pause contact: a dispute, hardship or a manual hold, until resolved or reviewed."""
    case = _case(loan_id)
    agent = write.caller.name
    arg = (inputs.dispute_input(agent, body.reason, body.review_by) if body.kind == "dispute"
           else inputs.hold_input(agent, body.kind, body.reason, body.review_by))
    return await write.update("hold", case, lambda: updates.hold(client, case, arg))


@router.post("/resolve", response_model=UpdateResult, responses=WRITE_ERRORS)
async def resolve(loan_id: str, body: ResolveBody, write: AgentWrite,
                  client: Temporal) -> Response:
    """Lift a hold: contact resumes."""
    case = _case(loan_id)
    arg = inputs.resolve_input(write.caller.name, body.resolution, body.reason)
    return await write.update("resolve", case, lambda: updates.resolve(client, case, arg))


@router.post("/cease", response_model=UpdateResult, responses=WRITE_ERRORS)
async def cease(loan_id: str, body: CeaseBody, write: AgentWrite, client: Temporal) -> Response:
    """The borrower asked us to stop: only the notices the rule pack allows still go out."""
    case = _case(loan_id)
    arg = inputs.cease_input(write.caller.name, body.reason)
    return await write.update("cease", case, lambda: updates.cease(client, case, arg))
