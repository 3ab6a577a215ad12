"""The agents' work queue: open call and visit tasks, most urgent first, each with the times it
may be worked (the rule pack's window in the borrower's local time, the allowed periods inside
the task's span) and the room left under the contact caps.

Only open tasks are listed: a task withdrawn by a hold, a dispute, a cease or the case's end, and
one already done or expired, is not in the queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from contracts.behaviour import BehaviourModel
from service import queue_priority
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
    # The case's stage and balance now, and, with a behaviour model configured, the amount one
    # call (or visit) is expected to recover (service/queue_priority.py); None without a model.
    stage: str = ""
    outstanding: Decimal | None = None
    currency: str = ""
    expected_per_call: Decimal | None = None

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
        stage=r["stage"] or "", outstanding=r["outstanding"],
        currency=(r["currency"] or "").strip(),
    )


def with_expected(row: TaskRow, model: BehaviourModel) -> TaskRow:
    """The row with its expected recovery per call (none for a task whose case has no row)."""
    if row.outstanding is None or not row.stage:
        return row
    return replace(row, expected_per_call=queue_priority.expected_per_call(
        model, channel=row.kind, stage=row.stage, outstanding=row.outstanding,
        currency=row.currency))


def _due_key(row: TaskRow) -> tuple[int, datetime]:
    return queue_priority.due_key(row.priority, row.due_by)


def ranked(rows: list[TaskRow], model: BehaviourModel | None, order: str) -> list[TaskRow]:
    """The rows with their expected figures (given a model), in `order`."""
    if model is not None:
        rows = [with_expected(r, model) for r in rows]
    if order == queue_priority.BY_EXPECTED:
        return queue_priority.by_expected(
            rows, lambda r: r.expected_per_call if r.expected_per_call is not None
            else Decimal(-1), _due_key)
    return queue_priority.by_due(rows, _due_key)


async def open_tasks(dsn: str, *, kind: str | None = None, limit: int = 50,
                     model: BehaviourModel | None = None,
                     order: str | None = None) -> list[TaskRow]:
    """Open call and visit tasks, most urgent first (highest priority, earliest deadline); with a
    behaviour model, each with its expected recovery per call, and by default ranked by it
    (`order`: "due" or "expected", see service/queue_priority.py)."""
    wanted = task_kind(kind)
    if not 1 <= limit <= MAX_TASKS:
        raise BadInput("limit", f"must be 1-{MAX_TASKS}, got {limit}")
    chosen = queue_priority.queue_order(order, model)
    # Ranked by expected recovery, the first `limit` are known only once every open task is.
    fetch = limit if chosen == queue_priority.BY_DUE else None
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as err:
        raise Unreachable(f"cannot reach the database: {type(err).__name__}") from None
    except ValueError:  # a DSN asyncpg cannot parse; never echoed, it may hold a password
        raise BadInput("DATABASE_URL", NOT_A_URL) from None
    try:
        rows = await conn.fetch(
            "SELECT t.task_key, t.loan_id, t.kind, t.step_id, t.priority, t.due_by, t.rule_pack, "
            "t.timezone, t.window_start, t.window_end, t.work_windows, t.caps_left, c.stage, "
            "c.outstanding, c.currency FROM tasks t LEFT JOIN cases c ON c.loan_id = t.loan_id "
            "WHERE t.status = 'open' AND ($1::text IS NULL OR t.kind = $1) "
            "ORDER BY t.priority DESC, t.due_by, t.id LIMIT $2",
            wanted, fetch,
        )
    finally:
        await conn.close()
    return ranked([_row(r) for r in rows], model, chosen)[:limit]
