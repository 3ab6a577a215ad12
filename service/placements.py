"""Agency placements: operators place and recall cases; an agency reads and reports on its own.

An agency (an API key with the `agency` role, named after the agency's id) sees only the cases
placed with it now: each call first asks the case whom it is placed with, and a case placed
elsewhere (or nowhere) is `NotPlacedHere`, which the API answers 403. Payments an agency
collected are applied like the loan system's (idempotent by payment id), tagged `agency:<id>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Final

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError

from contracts.agency import (
    AgencyContactInput,
    AgencyContactResult,
    AgencyPromiseInput,
    AgencyReturnInput,
    PlaceInput,
    PlacementView,
    RecallInput,
)
from contracts.messages import (
    CaseStatus,
    PaymentInput,
    PaymentResult,
    TimelineEvent,
    UpdateResult,
)
from contracts.names import Query, Update
from service import cases
from service.case_calls import ANSWER_TIMEOUT, answer, handle, rpc_error
from service.errors import Refused
from service.updates import execute
from service.vault import Vault, placement_borrower

# What an agency may see of a case's history: what happened while it was placed, of these kinds.
VISIBLE_KINDS: Final = frozenset({
    "placed", "payment", "payment_unapplied", "promise", "promise_kept", "promise_broken",
    "agency_contact", "compliance_breach", "settled", "placement_ended", "case_closed",
    "hold", "hold_resolved", "cease", "stage_changed"})


class NotPlacedHere(Refused):
    """The case is not placed with the calling agency (the API's 403)."""


def agency_source(agency_id: str) -> str:
    return f"agency:{agency_id}"


async def place(client: Client, loan_id: str, arg: PlaceInput) -> UpdateResult:
    return await execute(client, loan_id, Update.PLACE, arg, UpdateResult)


async def recall(client: Client, loan_id: str, arg: RecallInput) -> UpdateResult:
    return await execute(client, loan_id, Update.RECALL, arg, UpdateResult)


async def placement(client: Client, loan_id: str) -> PlacementView:
    try:
        view: PlacementView = await answer(
            handle(client, loan_id).query(Query.PLACEMENT, result_type=PlacementView),
            loan_id, ANSWER_TIMEOUT)
        return view
    except RPCError as err:
        raise rpc_error(err, loan_id) from None


async def placed_here(client: Client, loan_id: str, agency_id: str) -> PlacementView:
    view = await placement(client, loan_id)
    if not view.placed or view.agency_id != agency_id:
        raise NotPlacedHere(f"case for loan {loan_id} is not placed with agency {agency_id}")
    return view


@dataclass
class AgencyCaseRow:
    loan_id: str
    placed_at: datetime
    term_ends_at: datetime
    currency: str
    amount_at_placement: Decimal
    recovered: Decimal
    outstanding: Decimal | None
    days_past_due: int | None


async def agency_cases(pool: asyncpg.Pool, agency_id: str) -> list[AgencyCaseRow]:
    """The cases placed with `agency_id` now (from PostgreSQL), oldest placement first."""
    rows = await pool.fetch(
        """
        SELECT p.loan_id, p.placed_at, p.term_ends_at, p.currency, p.amount_at_placement,
               p.recovered, c.outstanding, c.days_past_due
        FROM placements p LEFT JOIN cases c ON c.loan_id = p.loan_id
        WHERE p.agency_id = $1 AND p.ended_at IS NULL
        ORDER BY p.placed_at, p.id
        """, agency_id)
    return [AgencyCaseRow(**dict(r)) for r in rows]


@dataclass
class AgencyCase:
    """One placed case as its agency sees it."""

    loan_id: str
    currency: str
    outstanding: Decimal
    days_past_due: int
    stage: str
    paid_total: Decimal
    placed_at: datetime | None
    term_ends_at: datetime | None
    recovered: Decimal | None
    breaches: int
    ceased: bool
    borrower: dict[str, str]
    history: list[TimelineEvent]


async def agency_case(client: Client, loan_id: str, agency_id: str, *,
                      vault: Vault | None = None) -> AgencyCase:
    view = await placed_here(client, loan_id, agency_id)
    if view.borrower and view.borrower.get("borrower_ref"):  # issue 18: read from the vault
        view.borrower = placement_borrower(
            view.borrower, await vault.fields(view.borrower["borrower_ref"]) if vault else None)
    st: CaseStatus = await cases.status(client, loan_id)
    events = await cases.timeline(client, loan_id)
    since = view.placed_at
    history = [e for e in events
               if e.kind in VISIBLE_KINDS and (since is None or e.at >= since)]
    return AgencyCase(
        loan_id=loan_id, currency=st.currency, outstanding=st.outstanding,
        days_past_due=st.days_past_due, stage=st.stage.value, paid_total=st.paid_total,
        placed_at=view.placed_at, term_ends_at=view.term_ends_at, recovered=view.recovered,
        breaches=view.breaches, ceased=st.ceased, borrower=view.borrower or {}, history=history)


async def agency_pay(client: Client, loan_id: str, agency_id: str,
                     payment: PaymentInput) -> PaymentResult:
    """A payment the agency collected: applied once per payment id (a repeat is `duplicate`)."""
    await placed_here(client, loan_id, agency_id)
    payment.source = agency_source(agency_id)
    return await cases.pay(client, loan_id, payment)


async def agency_contact(client: Client, loan_id: str, arg: AgencyContactInput,
                         ) -> AgencyContactResult:
    """A call, visit or message the agency made, checked against the case's rule pack when it
    happened; one outside the window or over a cap is recorded as a breach."""
    await placed_here(client, loan_id, arg.agency_id)
    return await execute(client, loan_id, Update.AGENCY_CONTACT, arg, AgencyContactResult)


async def agency_promise(client: Client, loan_id: str, agency_id: str, amount: Decimal,
                         currency: str, promised_date: date) -> UpdateResult:
    await placed_here(client, loan_id, agency_id)
    return await execute(client, loan_id, Update.AGENCY_PROMISE,
                         AgencyPromiseInput(agency_id, amount, currency, promised_date),
                         UpdateResult)


async def agency_return(client: Client, loan_id: str, agency_id: str,
                        reason: str = "") -> UpdateResult:
    await placed_here(client, loan_id, agency_id)
    return await execute(client, loan_id, Update.AGENCY_RETURN,
                         AgencyReturnInput(agency_id, reason), UpdateResult)
