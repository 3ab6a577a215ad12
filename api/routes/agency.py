"""Agency placements over HTTP: what a collection agency does on the cases placed with it, and
what operators do about placements (place, recall, the report per agency).

An agency's key has the role `agency` and is named after the agency's id in the roster. It sees
only the cases placed with it now: any other case is 403, before anything is read or changed.
"""

# No `from __future__ import annotations`: the write dependency below is built here and FastAPI
# reads the routes' annotations where they are written.

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from api.auth import allow
from api.bodies import Body, PaymentBody, PromiseBody
from api.deps import Db, Svc, Temporal
from api.encoding import plain
from api.keys import ApiKey, Role
from api.problems import Problem
from api.responses import READ_ERRORS, WRITE_ERRORS
from api.writes import Answer, Write, writer
from contracts.agency import AgencyContactInput, PlaceInput, RecallInput
from contracts.messages import TaskOutcome
from service import agency_report, inputs, placements
from service.values import parse_loan_id

router = APIRouter(prefix="/v1", tags=["agencies"])

AgencyCaller = Annotated[ApiKey, Depends(allow(Role.AGENCY))]
AgencyWrite = Annotated[Write, Depends(writer(Role.AGENCY))]
OperatorCaller = Annotated[ApiKey, Depends(allow(Role.OPERATOR))]
OperatorWrite = Annotated[Write, Depends(writer(Role.OPERATOR))]


class ContactBody(Body):
    channel: Literal["call", "visit", "sms", "email"]
    outcome: TaskOutcome
    at: datetime
    note: str = ""


class ReasonBody(Body):
    reason: str = ""


class PlaceBody(Body):
    agency_id: str = ""
    reason: str = ""


async def _mine(client: Temporal, loan_id: str, agency: ApiKey) -> str:
    case = parse_loan_id(loan_id, "loan_id")
    try:
        await placements.placed_here(client, case, agency.name)
    except placements.NotPlacedHere as err:
        raise Problem(403, "forbidden", str(err)) from None
    return case


@router.get("/agency/cases", responses=READ_ERRORS)
async def agency_cases(agency: AgencyCaller, pool: Db) -> list[dict[str, Any]]:
    """The cases placed with the calling agency now."""
    return [plain(r) for r in await placements.agency_cases(pool, agency.name)]


@router.get("/agency/cases/{loan_id}", responses=READ_ERRORS)
async def agency_case(loan_id: str, agency: AgencyCaller, client: Temporal, svc: Svc) -> Any:
    """One placed case: balance, days past due, the borrower's contact details, and its history
    since the placement."""
    case = await _mine(client, loan_id, agency)
    return plain(await placements.agency_case(client, case, agency.name, vault=svc.vault()))


@router.post("/agency/cases/{loan_id}/payments", responses=WRITE_ERRORS)
async def agency_payment(loan_id: str, body: PaymentBody, write: AgencyWrite,
                         client: Temporal) -> Response:
    """A payment the agency collected; the same payment id twice is applied once."""
    case = await _mine(client, loan_id, write.caller)
    payment = inputs.payment_input(body.payment_id, body.amount, body.currency, body.paid_at)

    async def run() -> Answer:
        result = await placements.agency_pay(client, case, write.caller.name, payment)
        return Answer(200, plain(result), [(case, f"agency payment: {result.status.value}")])

    return await write.once("agency_payment", case, run)


@router.post("/agency/cases/{loan_id}/contacts", responses=WRITE_ERRORS)
async def agency_contact(loan_id: str, body: ContactBody, write: AgencyWrite,
                         client: Temporal) -> Response:
    """A contact the agency made, checked against the case's rule pack when it happened; one
    outside the window or over a cap is recorded as a breach."""
    case = await _mine(client, loan_id, write.caller)
    arg = AgencyContactInput(write.caller.name, body.channel, body.outcome, body.at, body.note)

    async def run() -> Answer:
        result = await placements.agency_contact(client, case, arg)
        return Answer(200, plain(result), [(case, f"agency contact: {result.rule}")])

    return await write.once("agency_contact", case, run)


@router.post("/agency/cases/{loan_id}/promises", responses=WRITE_ERRORS)
async def agency_promise(loan_id: str, body: PromiseBody, write: AgencyWrite,
                         client: Temporal) -> Response:
    case = await _mine(client, loan_id, write.caller)
    promise = inputs.promise_input(write.caller.name, body.amount, body.currency, body.date)
    return await write.update("agency_promise", case, lambda: placements.agency_promise(
        client, case, write.caller.name, promise.amount, promise.currency,
        promise.promised_date))


@router.post("/agency/cases/{loan_id}/return", responses=WRITE_ERRORS)
async def agency_return(loan_id: str, body: ReasonBody, write: AgencyWrite,
                        client: Temporal) -> Response:
    """Hand the case back to the lender: its ladder resumes."""
    case = await _mine(client, loan_id, write.caller)
    return await write.update("agency_return", case, lambda: placements.agency_return(
        client, case, write.caller.name, body.reason))


@router.post("/cases/{loan_id}/place", responses=WRITE_ERRORS)
async def place(loan_id: str, body: PlaceBody, write: OperatorWrite,
                client: Temporal) -> Response:
    """Place the case with an agency (the roster's choice unless one is named)."""
    case = parse_loan_id(loan_id, "loan_id")
    arg = PlaceInput(write.caller.name, body.agency_id, body.reason)
    return await write.update("place", case, lambda: placements.place(client, case, arg))


@router.post("/cases/{loan_id}/recall", responses=WRITE_ERRORS)
async def recall(loan_id: str, body: ReasonBody, write: OperatorWrite,
                 client: Temporal) -> Response:
    """Take a placed case back from its agency."""
    case = parse_loan_id(loan_id, "loan_id")
    arg = RecallInput(write.caller.name, body.reason)
    return await write.update("recall", case, lambda: placements.recall(client, case, arg))


@router.get("/agency-report", responses=READ_ERRORS)
async def report(operator: OperatorCaller, pool: Db) -> dict[str, Any]:
    """Per agency and currency: cases placed, recovery rate, recovered, commission, average
    days placed, breaches."""
    return agency_report.to_json(await agency_report.agency_report(pool))
