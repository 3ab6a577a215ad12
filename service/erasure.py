"""A borrower's deletion request (issue 18): their personal data erased at once across all their
loans, or refused with the reason while a case is open or under legal hold.

    result = await erase_borrower(pool, client, "B-CN-01", actor="ops", reason="PIPL art. 47")

Refused (the surfaces answer 409 / exit 1) names the loans that stop it; nothing is erased then.
What is erased and what stays is `activities.database.vault.erase_loans`; the audit row names the
borrower id, the loans, who and why, never the data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.database.purge import held_loans, write_audit
from activities.database.vault import erase_loans
from service.case_calls import handle, rpc_error
from service.connection import Connections
from service.errors import BadInput, NotFound, Refused, Unreachable
from service.shapes import as_utc
from service.values import parse_label, parse_note, parse_person
from service.vault import erased_at, loans_of_borrower


@dataclass(frozen=True)
class ErasureRequest:
    borrower_id: str
    reason: str
    actor: str


def erasure_request(borrower_id: str, reason: str | None, actor: str) -> ErasureRequest:
    """The request as the CLI and the API take it: the borrower (the loan system's borrower id,
    or the `p:<hash>` key of a loan without one), why (required: it goes into the audit), who."""
    why = parse_note(reason, "reason", 200)
    if not why:
        raise BadInput("reason", "is required: the audit records why the data was erased")
    return ErasureRequest(parse_label(borrower_id, "borrower", 64), why,
                          parse_person(actor, "actor"))


@dataclass(frozen=True)
class ErasureResult:
    borrower_id: str
    loan_ids: list[str]
    what: list[str]  # the tables personal data was erased from (empty: erased before)


async def _open_loans(client: Client, loan_ids: list[str]) -> list[str]:
    """The loans whose case is still running in Temporal (the source of truth for open)."""
    found = []
    for loan_id in loan_ids:
        try:
            desc = await handle(client, loan_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                continue  # never started (or long gone): nothing open
            raise rpc_error(err, loan_id) from None
        if desc.status == WorkflowExecutionStatus.RUNNING:
            found.append(loan_id)
    return found


async def erase_borrower(pool: asyncpg.Pool, client: Client, borrower_id: str, *, actor: str,
                         reason: str) -> ErasureResult:
    loans = await loans_of_borrower(pool, borrower_id)
    if not loans:
        raise NotFound(f"no loans of borrower {borrower_id}")
    still_open = await _open_loans(client, loans)
    if still_open:
        raise Refused(f"borrower {borrower_id} has open cases ({', '.join(still_open)}): "
                      "erasure waits until every case has ended")
    held = sorted(await held_loans(pool, loans))
    if held:
        raise Refused(f"borrower {borrower_id} has cases under legal hold ({', '.join(held)}): "
                      "their data must be kept until the hold is released")
    async with pool.acquire() as conn, conn.transaction():
        what = await erase_loans(conn, loans)
        # Every request carried out is one audit row (the API's idempotency key keeps a repeated
        # HTTP request from being a second one).
        await write_audit(conn, run_key=f"erasure/{uuid.uuid4().hex}",
                          kind="erasure", actor=actor, reason=reason, loan_ids=loans,
                          what=what, borrower_id=borrower_id)
    return ErasureResult(borrower_id, loans, what)


async def erased_when(connections: Connections, loan_id: str) -> datetime | None:
    """When the loan's borrower was erased (UTC), or None: not erased, or no database to ask
    (status answers from the case alone then)."""
    try:
        at = await erased_at(await connections.pool(), loan_id)
    except (Unreachable, BadInput):
        return None
    return as_utc(at) if at is not None else None
