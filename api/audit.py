"""The audit trail: every accepted write, who made it, what, when, on which case, and how it
ended."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from api.keys import ApiKey

# (loan id or None, outcome): one row per case a write touched (a batch start has many).
AuditRow = tuple[str | None, str]


async def record(conn: asyncpg.Connection | asyncpg.Pool, caller: ApiKey, action: str,
                 idempotency_key: str, status: int, rows: Sequence[AuditRow]) -> None:
    await conn.executemany(
        "INSERT INTO api_audit (principal, role, action, loan_id, idempotency_key, status, outcome)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(caller.name, caller.role.value, action, loan_id, idempotency_key, status, outcome[:500])
         for loan_id, outcome in rows])
