"""Retention (issue 18): the Temporal Schedule that runs the purge daily, legal holds, and the
audit of every purge and erasure.

    await ensure_purge_schedule(client, task_queue)     # idempotent: the worker calls it at start
    await set_legal_hold(pool, "L1", actor="ops", reason="litigation 2026-123")
    await audit(pool, loan_id="L1")                     # what was erased, when, by whom

The purge itself is `workflows/purge_workflow.py` and its one activity
(`activities/database/purge.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)
from temporalio.service import RPCError

from contracts.names import TASK_QUEUE
from contracts.retention import (
    PURGE_HOUR_UTC,
    PURGE_SCHEDULE_ID,
    PURGE_WORKFLOW,
    PurgeInput,
)
from service.errors import NotFound, Unreachable


def purge_schedule(task_queue: str = TASK_QUEUE) -> Schedule:
    """Daily at PURGE_HOUR_UTC; a run still going when the next is due makes the next skip."""
    return Schedule(
        action=ScheduleActionStartWorkflow(PURGE_WORKFLOW, PurgeInput(), id=PURGE_SCHEDULE_ID,
                                           task_queue=task_queue),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(
            hour=[ScheduleRange(PURGE_HOUR_UTC)],
            comment="the retention purge (issue 18)")]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP))


async def ensure_purge_schedule(client: Client, task_queue: str = TASK_QUEUE, *,
                                schedule_id: str = PURGE_SCHEDULE_ID) -> bool:
    """Create the purge's schedule unless it exists; True when created now. Every worker calls
    it at start-up, so a deploy never needs a separate step and two workers never make two."""
    try:
        await client.create_schedule(schedule_id, purge_schedule(task_queue))
        return True
    except ScheduleAlreadyRunningError:
        return False
    except RPCError as err:
        raise Unreachable(f"cannot create the purge schedule: {err.message}") from None


# --------------------------------------------------------------------------- legal holds


async def set_legal_hold(pool: asyncpg.Pool, loan_id: str, *, actor: str, reason: str) -> None:
    """Keep a case's personal data past its retention (litigation, a regulator's request) until
    the hold is released; setting it again renews it."""
    await pool.execute(
        "INSERT INTO legal_holds (loan_id, reason, set_by) VALUES ($1, $2, $3) "
        "ON CONFLICT (loan_id) DO UPDATE SET reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, "
        "set_at = now(), released_at = NULL, released_by = NULL", loan_id, reason, actor)


async def release_legal_hold(pool: asyncpg.Pool, loan_id: str, *, actor: str) -> None:
    status = await pool.execute(
        "UPDATE legal_holds SET released_at = now(), released_by = $2 "
        "WHERE loan_id = $1 AND released_at IS NULL", loan_id, actor)
    if status.endswith(" 0"):
        raise NotFound(f"no legal hold on loan {loan_id}")


# --------------------------------------------------------------------------- the audit


@dataclass(frozen=True)
class AuditEntry:
    """One purge or erasure: what, when, by whom, the cases; never the data itself."""

    kind: str  # "purge" or "erasure"
    at: datetime
    actor: str  # an operator, or `schedule:retention-purge`
    reason: str
    borrower_id: str | None
    loan_ids: list[str]
    held_loan_ids: list[str]
    what: list[str]  # the tables personal data was erased from


async def audit(pool: asyncpg.Pool, *, loan_id: str | None = None,
                limit: int = 100) -> list[AuditEntry]:
    """The latest purges and erasures, newest first; with `loan_id`, those that named it."""
    rows = await pool.fetch(
        "SELECT * FROM erasure_audit WHERE $1::text IS NULL OR $1 = ANY(loan_ids) "
        "OR $1 = ANY(held_loan_ids) ORDER BY at DESC, id DESC LIMIT $2", loan_id, limit)
    return [AuditEntry(kind=r["kind"], at=r["at"], actor=r["actor"], reason=r["reason"],
                       borrower_id=r["borrower_id"], loan_ids=list(r["loan_ids"]),
                       held_loan_ids=list(r["held_loan_ids"]), what=list(r["what"]))
            for r in rows]
