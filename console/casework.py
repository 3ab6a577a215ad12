"""Reading what the console shows of a case and of a task: status, the borrower's zone and
calling window, who holds the task. Only `service/` is called."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import asyncpg
from temporalio.client import Client

from contracts.messages import CaseStatus, LoanInput
from service import cases
from service.connection import load_settings
from service.contact_window import CallWindow, borrower, call_window
from service.errors import ServiceError
from service.masking import mask_phone
from service.tasks import TaskRow
from service.vault import configured_vault, with_personal

ANSWER_WITHIN: Final = 10.0


@dataclass(frozen=True)
class Borrower:
    """What the console may keep of a borrower between requests: no name, no full number."""

    timezone: str
    lender: str
    masked_phone: str


_borrowers: dict[str, Borrower] = {}


async def borrower_of(client: Client, loan_id: str) -> Borrower:
    found = _borrowers.get(loan_id)
    if found is None:
        loan = await borrower(client, loan_id)
        found = Borrower(loan.timezone, loan.lender, mask_phone(loan.phone))
        if len(_borrowers) > 10_000:
            _borrowers.clear()
        _borrowers[loan_id] = found
    return found


async def full_borrower(client: Client, loan_id: str,
                        pool: asyncpg.Pool | None = None) -> LoanInput:
    """The borrower's details in full: only for the agent holding the task (log the reveal).
    A case started through the service keeps them in the vault (issue 18), read on `pool`."""
    loan = await borrower(client, loan_id)
    if loan.borrower_ref and pool is not None:
        vault = configured_vault(load_settings(), pool)
        loan = with_personal(loan, await vault.fields(loan.borrower_ref) if vault else None)
    return loan


@dataclass(frozen=True)
class QueueRow:
    task: TaskRow
    status: CaseStatus | None
    borrower: Borrower | None
    window: CallWindow | None
    holder: str | None
    problem: str | None = None


async def queue_row(client: Client, task: TaskRow, holder: str | None) -> QueueRow:
    try:
        status, who = await asyncio.gather(
            cases.status(client, task.loan_id, answer_within=ANSWER_WITHIN),
            borrower_of(client, task.loan_id))
        return QueueRow(task, status, who, call_window(who.timezone, status.rule_pack), holder)
    except ServiceError as err:
        return QueueRow(task, None, None, None, holder, str(err))
