"""The agents' work queue: open call and visit tasks, most urgent first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from service.connection import NOT_A_URL
from service.errors import BadInput, Unreachable
from service.values import parse_choice

TASK_KINDS: Final = ("call", "visit")
MAX_TASKS: Final = 1000


@dataclass(frozen=True)
class TaskRow:
    task_key: str
    loan_id: str
    kind: str
    step_id: str
    priority: int
    due_by: datetime


def task_kind(value: str | None) -> str | None:
    """A kind to filter on, or None for both."""
    return parse_choice(value, "kind", TASK_KINDS) if value is not None else None


async def open_tasks(dsn: str, *, kind: str | None = None, limit: int = 50) -> list[TaskRow]:
    """Open call and visit tasks, most urgent first (highest priority, earliest deadline)."""
    wanted = task_kind(kind)
    if not 1 <= limit <= MAX_TASKS:
        raise BadInput("limit", f"must be 1-{MAX_TASKS}, got {limit}")
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as err:
        raise Unreachable(f"cannot reach the database: {type(err).__name__}") from None
    except ValueError:  # a DSN asyncpg cannot parse; never echoed, it may hold a password
        raise BadInput("DATABASE_URL", NOT_A_URL) from None
    try:
        rows = await conn.fetch(
            "SELECT task_key, loan_id, kind, step_id, priority, due_by FROM tasks "
            "WHERE status = 'open' AND ($1::text IS NULL OR kind = $1) "
            "ORDER BY priority DESC, due_by, id LIMIT $2",
            wanted, limit,
        )
    finally:
        await conn.close()
    return [TaskRow(**dict(r)) for r in rows]
