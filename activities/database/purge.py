"""The retention purge (issue 18): erase the personal data of cases whose retention is over, keep
those under legal hold, and write one audit row for the run. Idempotent: the run's key makes a
retried activity erase nothing new and write no second audit row.

A case's retention is its policy's `retention_years` from the day it ended (`cases.closed_at`);
a policy no longer in `policies/` keeps the default. What is erased is what `erase_loans` erases
(the vault entry, reply texts, task notes); the rows, amounts, dates and rules stay for reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cache

import asyncpg
from temporalio import activity

from activities.database.vault import erase_loans
from contracts.policy import DEFAULT_RETENTION_YEARS
from contracts.retention import LITIGATION_ACTIONS, PURGE_EXPIRED, PurgeRequest, PurgeResult
from policies.loader import load_policies

# Cases with personal data left to erase: a vault entry not erased, a reply text, a task note.
_HOLDING = """
    SELECT c.loan_id, c.policy_name, c.closed_at FROM cases c
    WHERE c.closed_at IS NOT NULL AND c.state <> 'active' AND (
        EXISTS (SELECT 1 FROM borrower_vault v WHERE v.loan_id = c.loan_id
                AND v.erased_at IS NULL)
        OR EXISTS (SELECT 1 FROM tasks t WHERE t.loan_id = c.loan_id AND t.note IS NOT NULL)
        OR EXISTS (SELECT 1 FROM inbound_replies r WHERE c.loan_id = ANY(r.loan_ids)
                   AND r.body_cipher IS NOT NULL))
"""


@cache
def retention_by_policy() -> Mapping[str, int]:
    return {name: policy.retention_years for name, (policy, _) in load_policies().items()}


def retention_ends(closed_at: datetime, years: int) -> datetime:
    """`years` after `closed_at`, a 29 February ending on the 28th."""
    try:
        return closed_at.replace(year=closed_at.year + years)
    except ValueError:
        return closed_at.replace(year=closed_at.year + years, day=28)


async def hold_litigated(conn: asyncpg.Connection) -> None:
    """Put every case with a litigation legal action under legal hold (kept until an operator
    releases it)."""
    await conn.execute(
        "INSERT INTO legal_holds (loan_id, reason, set_by) "
        "SELECT DISTINCT loan_id, 'litigation', 'legal-action' FROM legal_actions "
        "WHERE action = ANY($1::text[]) ON CONFLICT (loan_id) DO NOTHING",
        list(LITIGATION_ACTIONS))


async def held_loans(conn: asyncpg.Connection | asyncpg.Pool, loan_ids: Iterable[str]) -> set[str]:
    """Which of these loans are under a legal hold not released, litigation included."""
    rows = await conn.fetch(
        "SELECT loan_id FROM legal_holds WHERE released_at IS NULL AND loan_id = ANY($1::text[]) "
        "UNION SELECT loan_id FROM legal_actions WHERE action = ANY($2::text[]) "
        "AND loan_id = ANY($1::text[]) AND loan_id NOT IN "
        "(SELECT loan_id FROM legal_holds WHERE released_at IS NOT NULL)",
        sorted(set(loan_ids)), list(LITIGATION_ACTIONS))
    return {r["loan_id"] for r in rows}


async def write_audit(conn: asyncpg.Connection, *, run_key: str, kind: str, actor: str,
                      reason: str, loan_ids: Iterable[str], held: Iterable[str] = (),
                      what: Iterable[str] = (), borrower_id: str | None = None) -> bool:
    """One audit row (no personal value: loan ids, table names, who and why); False when the
    run's row was written before."""
    status = await conn.execute(
        "INSERT INTO erasure_audit (run_key, kind, actor, reason, borrower_id, loan_ids, "
        "held_loan_ids, what) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (run_key) DO NOTHING",
        run_key, kind, actor, reason, borrower_id, sorted(set(loan_ids)), sorted(set(held)),
        sorted(set(what)))
    return status.endswith(" 1")


class PurgeActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=PURGE_EXPIRED)
    async def purge_expired(self, req: PurgeRequest) -> PurgeResult:
        years = retention_by_policy()
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchrow(
                "SELECT loan_ids, held_loan_ids FROM erasure_audit WHERE run_key = $1",
                req.run_key)
            if done is not None:  # a retry of a run that committed
                return PurgeResult(list(done["loan_ids"]), list(done["held_loan_ids"]))
            await hold_litigated(conn)
            due = [r["loan_id"] for r in await conn.fetch(_HOLDING)
                   if retention_ends(r["closed_at"], years.get(r["policy_name"],
                                                               DEFAULT_RETENTION_YEARS))
                   <= req.as_of]
            held = await held_loans(conn, due)
            erased = sorted(set(due) - held)
            what = await erase_loans(conn, erased) if erased else []
            await write_audit(conn, run_key=req.run_key, kind="purge", actor=req.actor,
                              reason=f"retention ended before {req.as_of:%Y-%m-%d}",
                              loan_ids=erased, held=held, what=what)
        return PurgeResult(erased=erased, held=sorted(held))
