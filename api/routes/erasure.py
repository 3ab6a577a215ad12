"""A borrower's deletion request, legal holds and the erasure audit (issue 18): operator role.

An erasure refused because a case is open or under legal hold answers 409 with the reason (the
request may succeed once the case has ended or the hold is released); nothing is erased then.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import Field

from api.auth import Operator
from api.bodies import Body, Text
from api.deps import Db, Temporal
from api.keys import Role
from api.problems import problem_body
from api.responses import READ_ERRORS, WRITE_ERRORS
from api.writes import Answer, Write, writer
from service import erasure, retention
from service.errors import ErrorKind, Refused
from service.values import parse_loan_id, parse_note

router = APIRouter(prefix="/v1", tags=["personal data"])
OperatorWrite = Annotated[Write, Depends(writer(Role.OPERATOR))]


class ErasureBody(Body):
    borrower_id: str = Field(max_length=64, description="The loan system's borrower id (or the "
                             "p:<hash> key of a loan without one).")
    reason: Text = Field(description="Why: recorded in the audit.")


class HoldBody(Body):
    reason: Text | None = None


@router.post("/erasures", responses=WRITE_ERRORS)
async def erase(body: ErasureBody, write: OperatorWrite, client: Temporal, pool: Db) -> Response:
    """Erase the borrower's personal data across all their loans, at once; 409 with the reason
    while any of their cases is open or under legal hold."""
    request = erasure.erasure_request(body.borrower_id, body.reason, write.caller.name)

    async def run() -> Answer:
        try:
            done = await erasure.erase_borrower(pool, client, request.borrower_id,
                                                actor=request.actor, reason=request.reason)
        except Refused as err:
            return Answer(409, problem_body(409, ErrorKind.REFUSED.value, err.reason),
                          [(None, f"refused: {err.reason}")])
        return Answer(200, {"borrower_id": done.borrower_id, "loan_ids": done.loan_ids,
                            "erased_from": done.what},
                      [(loan_id, "erased") for loan_id in done.loan_ids])

    return await write.once("erase", None, run)


@router.put("/cases/{loan_id}/legal-hold", responses=WRITE_ERRORS)
async def set_hold(loan_id: str, body: HoldBody, write: OperatorWrite, pool: Db) -> Response:
    """Keep the case's personal data past its retention until the hold is released."""
    case = parse_loan_id(loan_id, "loan_id")
    why = parse_note(body.reason, "reason", default="legal hold")

    async def run() -> Answer:
        await retention.set_legal_hold(pool, case, actor=write.caller.name, reason=why)
        return Answer(200, {"loan_id": case, "legal_hold": True})

    return await write.once("legal_hold", case, run)


@router.delete("/cases/{loan_id}/legal-hold", responses=WRITE_ERRORS)
async def release_hold(loan_id: str, write: OperatorWrite, pool: Db) -> Response:
    """Release the case's legal hold: its retention applies again."""
    case = parse_loan_id(loan_id, "loan_id")

    async def run() -> Answer:
        await retention.release_legal_hold(pool, case, actor=write.caller.name)
        return Answer(200, {"loan_id": case, "legal_hold": False})

    return await write.once("legal_hold_release", case, run)


@router.get("/erasures", responses=READ_ERRORS)
async def audit(operator: Operator, pool: Db, loan_id: str | None = None) -> list[dict[str, Any]]:
    """The latest purges and erasures, newest first (with `loan_id`, those naming it): what,
    when, by whom, the cases; never the data."""
    case = parse_loan_id(loan_id, "loan_id") if loan_id else None
    return [{**vars(e), "at": e.at.isoformat()} for e in await retention.audit(pool, loan_id=case)]
