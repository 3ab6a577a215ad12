"""What a loan system does: open cases (one, or a batch answered row by row), report payments,
close cases. Every call is a write: it takes an Idempotency-Key."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter
from fastapi.responses import Response

from api.bodies import (
    BatchAnswer,
    BatchBody,
    CloseBody,
    LoanBody,
    PaymentBody,
    RowAnswer,
    StartAnswer,
)
from api.deps import Svc, Temporal
from api.encoding import plain
from api.problems import MEDIA_TYPE
from api.responses import WRITE_ERRORS, ProblemDetails
from api.writes import Answer, LoanSystemWrite
from contracts.messages import LoanInput, PaymentResult, PaymentStatus, UpdateResult
from service import cases, inputs, updates
from service.errors import BadInput, Refused
from service.loan_file import validate_loan_record
from service.values import parse_loan_id

router = APIRouter(prefix="/v1", tags=["loan system"])
PAYMENT_UNAPPLIED: Final[dict[str, Any]] = {
    "description": "bad input (field named), refused by the case, or the payment received but "
                   "unapplied (kind `refused`, the detail gives the reason)",
    "model": ProblemDetails,
    "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


@router.post("/cases", response_model=StartAnswer, responses=WRITE_ERRORS)
async def start_case(body: LoanBody, write: LoanSystemWrite, client: Temporal,
                     svc: Svc) -> Response:
    """Open the collection case for one loan; a loan that has a case already starts nothing."""
    loan = validate_loan_record(body.model_dump(exclude_none=True))

    async def run() -> Answer:
        outcome = await cases.start_loan(client, loan, task_queue=svc.task_queue,
                                         vault=svc.vault())
        return Answer(200, {"loan_id": loan.loan_id, "outcome": outcome},
                      [(loan.loan_id, outcome)])

    return await write.once("start", loan.loan_id, run)


def _loan_id_or_none(raw: object) -> str | None:
    try:
        return parse_loan_id(raw, "loan_id") if isinstance(raw, str | int) else None
    except BadInput:
        return None


@router.post("/cases:batch", response_model=BatchAnswer, responses=WRITE_ERRORS)
async def start_batch(body: BatchBody, write: LoanSystemWrite, client: Temporal,
                      svc: Svc) -> Response:
    """Open cases for many loans: each row is answered started, already running, already
    closed, or refused with the field and the reason; bad rows never stop good ones."""
    answers: dict[int, RowAnswer] = {}
    to_start: list[tuple[int, LoanInput]] = []
    first_row: dict[str, int] = {}
    for row, raw in enumerate(body.loans):
        try:
            loan = validate_loan_record(raw)
        except BadInput as err:
            answers[row] = RowAnswer(row=row, loan_id=_loan_id_or_none(raw.get("loan_id")),
                                     outcome="refused", field=err.field, reason=str(err))
            continue
        if loan.loan_id in first_row:
            answers[row] = RowAnswer(row=row, loan_id=loan.loan_id, outcome="refused",
                                     field="loan_id",
                                     reason=f"repeats row {first_row[loan.loan_id]} of this batch")
            continue
        first_row[loan.loan_id] = row
        to_start.append((row, loan))

    async def run() -> Answer:
        results: dict[str, cases.StartResult] = {}
        await cases.start_many(client, [loan for _, loan in to_start], task_queue=svc.task_queue,
                               on_progress=lambda r: results.__setitem__(r.loan_id, r),
                               vault=svc.vault())
        for row, loan in to_start:
            r = results[loan.loan_id]
            answers[row] = RowAnswer(row=row, loan_id=loan.loan_id, outcome=r.outcome,
                                     reason=r.error)
        ordered = [answers[row] for row in range(len(body.loans))]
        counts = dict.fromkeys(cases.OUTCOMES, 0)
        for a in ordered:
            counts[a.outcome] += 1
        audit = [(a.loan_id, a.outcome if a.reason is None else f"{a.outcome}: {a.reason}")
                 for a in ordered]
        return Answer(200, BatchAnswer(counts=counts, results=ordered).model_dump(mode="json"),
                      audit)

    return await write.once("start_batch", None, run)


@router.post("/cases/{loan_id}/payments", response_model=PaymentResult,
             responses=WRITE_ERRORS | {422: PAYMENT_UNAPPLIED})
async def pay(loan_id: str, body: PaymentBody, write: LoanSystemWrite,
              client: Temporal) -> Response:
    """Report a payment and get the case's answer: `applied` (fees, interest, then principal;
    the case closes when paid) or `duplicate` (this payment id was reported before: nothing
    changed), both 200; `unapplied` (money received that cannot be applied, such as another
    currency: kept with the reason) is a 422 problem whose detail is the reason."""
    case = parse_loan_id(loan_id, "loan_id")
    payment = inputs.payment_input(body.payment_id, body.amount, body.currency, body.paid_at)

    async def run() -> Answer:
        # A case whose workflow has ended keeps the payment unapplied (service.updates.pay).
        result = await updates.pay(client, write.pool, case, payment)
        if result.status == PaymentStatus.UNAPPLIED:
            # Kept by the case with the reason, but not applied: a problem the loan system sees.
            raise Refused(f"payment {result.payment_id} unapplied: "
                          f"{result.reason or result.message}")
        return Answer(200, plain(result),
                      [(case, f"payment {payment.payment_id}: {result.status.value}")])

    return await write.once("pay", case, run)


@router.post("/cases/{loan_id}/close", response_model=UpdateResult, responses=WRITE_ERRORS)
async def close(loan_id: str, body: CloseBody, write: LoanSystemWrite,
                client: Temporal) -> Response:
    """Close a case for good (bankruptcy, deceased, sold, fraud, other): no more contact."""
    case = parse_loan_id(loan_id, "loan_id")
    arg = inputs.close_input(write.caller.name, body.reason)
    return await write.update("close", case, lambda: updates.close(client, case, arg))
