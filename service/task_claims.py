"""Agents' claims on tasks: a lease, so two agents never hold one task, and the access log of
every reveal of a borrower's contact details.

    claim = await claim_task(pool, "collection-L1/early-call", "agent-7")   # or Conflict
    await log_reveal(pool, claim, ("phone", "email"), surface="console")
    await release_claim(pool, claim.task_key, "agent-7")   # back in the queue at once
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from service.errors import Conflict, ErrorKind, NotFound, ServiceError
from service.shapes import as_utc

LEASE_MINUTES: Final = 30


@dataclass(frozen=True)
class Claim:
    task_key: str
    loan_id: str
    agent: str
    lease_until: datetime


async def claim_task(pool: asyncpg.Pool, task_key: str, agent: str, *,
                     lease_minutes: int = LEASE_MINUTES) -> Claim:
    """Hold an open task for `lease_minutes` (claiming it again renews the lease).

    Conflict if another agent holds it; NotFound if no open task has that key."""
    async with pool.acquire() as conn, conn.transaction():
        task = await conn.fetchrow(
            "SELECT loan_id FROM tasks WHERE task_key = $1 AND status = 'open' FOR UPDATE",
            task_key)
        if task is None:
            raise NotFound(f"no open task {task_key}")
        row = await conn.fetchrow(
            """
            INSERT INTO task_claims (task_key, loan_id, agent, lease_until)
            VALUES ($1, $2, $3, now() + make_interval(mins => $4))
            ON CONFLICT (task_key) DO UPDATE
                SET agent = EXCLUDED.agent, claimed_at = now(), lease_until = EXCLUDED.lease_until
                WHERE task_claims.agent = EXCLUDED.agent OR task_claims.lease_until < now()
            RETURNING task_key, loan_id, agent, lease_until
            """,
            task_key, task["loan_id"], agent, lease_minutes)
    if row is None:
        raise Conflict(f"task {task_key} is held by another agent")
    return Claim(row["task_key"], row["loan_id"], row["agent"], as_utc(row["lease_until"]))


async def held_claim(pool: asyncpg.Pool, task_key: str, agent: str) -> Claim | None:
    """The agent's live claim on an open task, if they hold one."""
    row = await pool.fetchrow(
        "SELECT c.task_key, c.loan_id, c.agent, c.lease_until FROM task_claims c "
        "JOIN tasks t USING (task_key) "
        "WHERE c.task_key = $1 AND c.agent = $2 AND c.lease_until > now() AND t.status = 'open'",
        task_key, agent)
    return None if row is None else Claim(row["task_key"], row["loan_id"], row["agent"],
                                          as_utc(row["lease_until"]))


async def claims_of(pool: asyncpg.Pool, agent: str) -> list[Claim]:
    """The open tasks the agent holds now, soonest lease end first."""
    rows = await pool.fetch(
        "SELECT c.task_key, c.loan_id, c.agent, c.lease_until FROM task_claims c "
        "JOIN tasks t USING (task_key) "
        "WHERE c.agent = $1 AND c.lease_until > now() AND t.status = 'open' "
        "ORDER BY c.lease_until", agent)
    return [Claim(r["task_key"], r["loan_id"], r["agent"], as_utc(r["lease_until"]))
            for r in rows]


async def holders(pool: asyncpg.Pool, task_keys: Sequence[str]) -> dict[str, str]:
    """task key -> the agent holding it now, for those that are held."""
    rows = await pool.fetch(
        "SELECT task_key, agent FROM task_claims WHERE task_key = ANY($1::text[]) "
        "AND lease_until > now()", list(task_keys))
    return {r["task_key"]: r["agent"] for r in rows}


class NotTheHolder(ServiceError):
    """A release by an agent who does not hold the claim: the surface answers it as forbidden
    (403), not as a conflict, since trying again will not make it theirs."""

    kind = ErrorKind.CONFLICT

    def __init__(self, message: str, loan_id: str) -> None:
        super().__init__(message)
        self.loan_id = loan_id


async def release_claim(pool: asyncpg.Pool, task_key: str, agent: str) -> Claim:
    """Give back a task the agent holds: its claim ends now, so any agent may claim it at once.

    NotFound if no task has that key; Conflict if nobody holds it (never claimed, lapsed, or
    released already); NotTheHolder if another agent does. Answers the claim as it was."""
    async with pool.acquire() as conn, conn.transaction():
        task = await conn.fetchrow("SELECT loan_id FROM tasks WHERE task_key = $1", task_key)
        if task is None:
            raise NotFound(f"no task {task_key}")
        row = await conn.fetchrow(
            "SELECT task_key, loan_id, agent, lease_until FROM task_claims "
            "WHERE task_key = $1 AND lease_until > now() FOR UPDATE", task_key)
        if row is None:
            raise Conflict(f"task {task_key} is not held by anyone")
        if row["agent"] != agent:
            raise NotTheHolder(f"task {task_key} is held by another agent", row["loan_id"])
        await conn.execute("DELETE FROM task_claims WHERE task_key = $1", task_key)
    return Claim(row["task_key"], row["loan_id"], row["agent"], as_utc(row["lease_until"]))


async def log_reveal(pool: asyncpg.Pool, claim: Claim, fields: Sequence[str], *,
                     surface: str) -> None:
    """Write one access-log row: who saw which of the borrower's details, on which task."""
    await pool.execute(
        "INSERT INTO contact_reveals (agent, task_key, loan_id, fields, surface) "
        "VALUES ($1, $2, $3, $4, $5)",
        claim.agent, claim.task_key, claim.loan_id, ",".join(fields), surface)


async def holds_case(pool: asyncpg.Pool, loan_id: str, agent: str) -> bool:
    """Whether the agent holds a live lease on a task of the loan (the task may have just been
    worked: the case stays theirs until the lease ends)."""
    found = await pool.fetchval(
        "SELECT 1 FROM task_claims WHERE loan_id = $1 AND agent = $2 AND lease_until > now()",
        loan_id, agent)
    return found is not None
