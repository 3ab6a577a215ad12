"""A case page (status panel and timeline, refreshed while the case runs) and the case search
(the filters of `starter.py list`, paginated)."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from console.casework import ANSWER_WITHIN, borrower_of
from console.web import ConsoleRoute, Denied, Viewer, require
from contracts.messages import CaseState, Stage
from service import cases, task_claims
from service.errors import BadInput
from service.listing import list_cases_db

router = APIRouter(route_class=ConsoleRoute)
PAGE_SIZE: Final = 25
FILTERS: Final = ("stage", "state", "min_outstanding", "max_outstanding", "min_dpd", "max_dpd",
                  "agent", "policy_version", "currency")
BREACH: Final = "breach"


async def _may_see(v: Viewer, loan_id: str) -> None:
    if v.is_operator:
        return
    if not await task_claims.holds_case(v.pool, loan_id, v.name):
        raise Denied(403, "forbidden")


async def _case_context(v: Viewer, loan_id: str) -> dict[str, Any]:
    client = await v.temporal()
    status = await cases.status(client, loan_id, answer_within=ANSWER_WITHIN)
    timeline = await cases.timeline(client, loan_id, answer_within=ANSWER_WITHIN)
    who = await borrower_of(client, loan_id)
    return {"case": status, "timeline": list(reversed(timeline)), "borrower": who,
            "zone": who.timezone, "running": status.state == CaseState.ACTIVE, "breach": BREACH}


@router.get("/cases/{loan_id}")
async def case_page(request: Request, loan_id: str) -> Response:
    v = require(request, "agent", "operator")
    await _may_see(v, loan_id)
    return v.page("case.html", loan_id=loan_id, **await _case_context(v, loan_id))


@router.get("/cases/{loan_id}/live")
async def case_live(request: Request, loan_id: str) -> Response:
    """The panel and timeline alone, for the page's polling (htmx)."""
    v = require(request, "agent", "operator")
    await _may_see(v, loan_id)
    return v.page("case_live.html", loan_id=loan_id, **await _case_context(v, loan_id))


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params[k].strip() for k in FILTERS
            if request.query_params.get(k, "").strip()}


@router.get("/cases")
async def search(request: Request) -> Response:
    v = require(request, "operator")
    chosen = _filters(request)
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    error = None
    rows = []
    try:
        def number(name: str) -> int | None:
            return int(chosen[name]) if name in chosen else None

        found = await list_cases_db(
            v.pool, limit=page * PAGE_SIZE + 1, stage=chosen.get("stage"),
            state=chosen.get("state"), min_outstanding=number("min_outstanding"),
            max_outstanding=number("max_outstanding"), min_dpd=number("min_dpd"),
            max_dpd=number("max_dpd"), agent=chosen.get("agent"),
            policy_version=chosen.get("policy_version"), currency=chosen.get("currency"))
        rows = found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        more = len(found) > page * PAGE_SIZE
    except ValueError as err:
        error = (v.t("bad_input", field=err.field, message=err.message)
                 if isinstance(err, BadInput) else str(err))
        more = False
    query = urlencode(chosen)
    return v.page("search.html", rows=rows, chosen=chosen, page=page, more=more, error=error,
                  query=query, stages=[s.value for s in Stage],
                  states=[s.value for s in CaseState])
