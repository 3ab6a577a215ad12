"""One task as an agent sees it: the task, who holds it, and the borrower's contact details,
in full only to the agent holding the task's claim (and that reveal written to the access log),
masked to everybody else.

    view = await task_view(pool, client, "collection-L1/early-call", viewer="agent-7",
                           surface="api")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg
from temporalio.client import Client

from service.connection import load_settings
from service.contact_window import borrower
from service.errors import NotFound
from service.masking import mask_email, mask_phone
from service.shapes import as_utc
from service.task_claims import Claim, log_reveal
from service.vault import configured_vault, with_personal

REVEALED: Final = ("phone", "address")  # what the holder sees in full; e-mail stays masked


@dataclass(frozen=True)
class Contact:
    phone: str
    email: str
    address: str | None  # the postal address, for loans that carry one
    revealed: bool  # True: phone (and address) in full, for the holder of the claim


@dataclass(frozen=True)
class TaskView:
    task_key: str
    loan_id: str
    kind: str
    step_id: str
    priority: int
    due_by: datetime
    status: str  # open, done, expired, withdrawn
    outcome: str | None
    held_by: str | None  # the agent holding a live claim on it
    lease_until: datetime | None
    contact: Contact


async def task_view(pool: asyncpg.Pool, client: Client, task_key: str, *, viewer: str | None,
                    surface: str) -> TaskView:
    """The task; `viewer` (an agent id, or None for an operator) sees the borrower's phone only
    while holding a live claim on the open task, and each such answer logs one reveal."""
    row = await pool.fetchrow(
        "SELECT t.task_key, t.loan_id, t.kind, t.step_id, t.priority, t.due_by, t.status, "
        "t.outcome, c.agent, c.lease_until FROM tasks t "
        "LEFT JOIN task_claims c ON c.task_key = t.task_key AND c.lease_until > now() "
        "WHERE t.task_key = $1", task_key)
    if row is None:
        raise NotFound(f"no task {task_key}")
    holder: str | None = row["agent"]
    lease = as_utc(row["lease_until"]) if row["lease_until"] is not None else None
    loan = await borrower(client, row["loan_id"])
    if loan.borrower_ref:  # issue 18: the contact details are in the vault, not the case
        vault = configured_vault(load_settings(), pool)
        loan = with_personal(loan, await vault.fields(loan.borrower_ref) if vault else None)
    address = getattr(loan, "address", None) or None
    reveal = (viewer is not None and holder == viewer and lease is not None
              and row["status"] == "open")
    if reveal:
        assert viewer is not None and lease is not None
        fields = REVEALED if address else REVEALED[:1]
        await log_reveal(pool, Claim(task_key, row["loan_id"], viewer, lease), fields,
                         surface=surface)
        contact = Contact(loan.phone, mask_email(loan.email), address, True)
    else:
        contact = Contact(mask_phone(loan.phone), mask_email(loan.email),
                          "***" if address else None, False)
    return TaskView(
        task_key=row["task_key"], loan_id=row["loan_id"], kind=row["kind"],
        step_id=row["step_id"], priority=row["priority"], due_by=as_utc(row["due_by"]),
        status=row["status"], outcome=row["outcome"], held_by=holder, lease_until=lease,
        contact=contact)
