"""What operators read: one case (status, timeline, history), cases by filter, the report."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import Operator
from api.deps import Db, Temporal
from api.responses import READ_ERRORS
from contracts.messages import CaseStatus, TimelineEvent
from service import cases, listing
from service import history as case_history
from service import report as portfolio
from service.errors import BadInput
from service.listing import CaseRow
from service.values import parse_loan_id

router = APIRouter(prefix="/v1", tags=["operators"])


@router.get("/cases/{loan_id}", response_model=CaseStatus, responses=READ_ERRORS)
async def status(loan_id: str, operator: Operator, client: Temporal) -> CaseStatus:
    """The case as it is now: state, stage, balance, next action, arrangements, contacts."""
    return await cases.status(client, parse_loan_id(loan_id, "loan_id"))


@router.get("/cases/{loan_id}/timeline", response_model=list[TimelineEvent],
            responses=READ_ERRORS)
async def timeline(loan_id: str, operator: Operator, client: Temporal) -> list[TimelineEvent]:
    """Everything the case recorded, oldest first."""
    return await cases.timeline(client, parse_loan_id(loan_id, "loan_id"))


class HistoryItem(BaseModel):
    at: str
    source: str
    kind: str
    summary: str
    rule: str | None
    actor: str | None
    detail: dict[str, Any]


@router.get("/cases/{loan_id}/history", response_model=list[HistoryItem], responses=READ_ERRORS)
async def history(loan_id: str, operator: Operator, client: Temporal,
                  pool: Db) -> list[dict[str, Any]]:
    """The case's workflow timeline merged with its rows in PostgreSQL, each event once."""
    entries = await case_history.history(client, pool, parse_loan_id(loan_id, "loan_id"))
    return [e.to_json() for e in entries]


class CasePage(BaseModel):
    cases: list[CaseRow]
    next_cursor: str | None = None


def _offset(cursor: str | None) -> int:
    # Opaque to callers, so the paging can move to server-side tokens without a new contract.
    if cursor is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadInput("cursor", "is not a cursor this API gave") from None
    if offset < 0:
        raise BadInput("cursor", "is not a cursor this API gave")
    return offset


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


@router.get("/cases", response_model=CasePage, responses=READ_ERRORS)
async def list_cases(
    operator: Operator, client: Temporal, pool: Db,
    stage: Annotated[str | None, Query(max_length=20)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    min_outstanding: Annotated[int | None, Query(ge=0)] = None,
    max_outstanding: Annotated[int | None, Query(ge=0)] = None,
    min_dpd: int | None = None, max_dpd: int | None = None,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    policy_version: Annotated[str | None, Query(max_length=130)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    source: Literal["temporal", "db"] = "temporal",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> CasePage:
    """Cases matching every filter given (the filters of `starter.py list`), a page at a time:
    pass `next_cursor` back as `cursor` for the next page. From Temporal visibility (a second or
    so behind the cases; most recently started first) or from PostgreSQL (`source=db`; largest
    balance first)."""
    offset = _offset(cursor)
    filters: dict[str, Any] = dict(
        stage=stage, state=state, min_outstanding=min_outstanding,
        max_outstanding=max_outstanding, min_dpd=min_dpd, max_dpd=max_dpd, agent=agent,
        policy_version=policy_version, currency=currency)
    # One more than the page tells whether another page follows.
    wanted = offset + limit + 1
    rows = (await listing.list_cases_db(pool, limit=wanted, **filters) if source == "db"
            else await listing.list_cases(client, limit=wanted, **filters))
    page = rows[offset:offset + limit]
    return CasePage(cases=page, next_cursor=_cursor(offset + limit) if len(rows) == wanted
                    else None)


@router.get("/report", response_model=dict[str, Any], responses=READ_ERRORS)
async def report(operator: Operator, pool: Db,
                 policy: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    """The portfolio report: recovery, cure and roll rates per policy version and segment."""
    figures = await portfolio.portfolio_report(pool, policy_name=policy)
    result: dict[str, Any] = figures.to_json()
    return result
