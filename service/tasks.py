"""The agents' work queue: open call and visit tasks, most urgent first, each with the times it
may be worked (the rule pack's window in the borrower's local time, the allowed periods inside
the task's span) and the room left under the contact caps.

Only open tasks are listed: a task withdrawn by a hold, a dispute, a cease or the case's end, and
one already done or expired, is not in the queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    # When it may be worked (empty for tasks created before the workflow recorded it): the rule
    # pack, the borrower's zone and the pack's window there ("08:00", "22:00"), the allowed
    # periods inside the task's span ([from, until] UTC ISO), and the room left under each cap
    # (cap id -> count) on the day the task was created.
    rule_pack: str = ""
    timezone: str = ""
    window_start: str = ""
    window_end: str = ""
    work_windows: list[list[str]] = field(default_factory=list)
    caps_left: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> str:
        """The pack's window in the borrower's zone: "08:00-22:00 Asia/Shanghai" (or "")."""
        if not (self.window_start and self.window_end):
            return ""
        return f"{self.window_start}-{self.window_end} {self.timezone}".strip()

    def next_period(self, now: datetime | None = None) -> tuple[datetime, datetime] | None:
        """The first allowed period that has not ended by `now` (default: now), or None."""
        now = now or datetime.now(UTC)
        for period in self.work_windows:
            try:
                start, end = (datetime.fromisoformat(p) for p in period[:2])
            except (TypeError, ValueError):
                continue
            if end.tzinfo is None:
                start, end = start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)
            if end > now:
                return start, end
        return None

    def local(self, at: datetime) -> datetime:
        """`at` in the borrower's zone (UTC when the task does not name one)."""
        try:
            return at.astimezone(ZoneInfo(self.timezone)) if self.timezone else at
        except (ZoneInfoNotFoundError, ValueError):
            return at


def task_kind(value: str | None) -> str | None:
    """A kind to filter on, or None for both."""
    return parse_choice(value, "kind", TASK_KINDS) if value is not None else None


def _json(value: Any, empty: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return empty
    return empty if value is None else value


def _row(r: asyncpg.Record) -> TaskRow:
    caps = _json(r["caps_left"], {})
    windows = _json(r["work_windows"], [])
    return TaskRow(
        task_key=r["task_key"], loan_id=r["loan_id"], kind=r["kind"], step_id=r["step_id"],
        priority=r["priority"], due_by=r["due_by"], rule_pack=r["rule_pack"] or "",
        timezone=r["timezone"] or "", window_start=r["window_start"] or "",
        window_end=r["window_end"] or "",
        work_windows=[[str(x) for x in p] for p in windows if isinstance(p, list)]
        if isinstance(windows, list) else [],
        caps_left={str(k): int(v) for k, v in caps.items()} if isinstance(caps, dict) else {},
    )


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
            "SELECT task_key, loan_id, kind, step_id, priority, due_by, rule_pack, timezone, "
            "window_start, window_end, work_windows, caps_left FROM tasks "
            "WHERE status = 'open' AND ($1::text IS NULL OR kind = $1) "
            "ORDER BY priority DESC, due_by, id LIMIT $2",
            wanted, limit,
        )
    finally:
        await conn.close()
    return [_row(r) for r in rows]
