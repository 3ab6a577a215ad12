"""The work queue agents and dialers read: calls and field visits, each with a deadline.

Since workflows/carried_writes.py's patch a task carries the case's writes and its reservation
under the caps, committed with it in one transaction.
"""

from __future__ import annotations

import json

import asyncpg
from temporalio import activity

from activities.database.contacts import reserve
from activities.database.delivery_status import tell_own_case
from activities.database.records import write_carried
from contracts.activity_io import CLOSE_TASK, CREATE_TASK, TaskClose, TaskCreated, TaskInput


class TaskActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=CREATE_TASK)
    async def create_task(self, task: TaskInput) -> TaskCreated:
        """The task, with the writes it carries and its reservation, in one transaction. A
        refused reservation creates no task; the carried writes are committed either way."""
        decision = None
        async with self.pool.acquire() as conn, conn.transaction():
            reports = await write_carried(conn, task.records)
            if task.reserve is not None:
                decision = await reserve(conn, task.reserve)
            created = decision is None or decision.allowed
            if created:
                await _insert(conn, task, decision.caps_left if decision else {})
                reports += await write_carried(conn, task.on_created)
        await tell_own_case(reports)
        return TaskCreated(created=created, decision=decision)

    @activity.defn(name=CLOSE_TASK)
    async def close_task(self, close: TaskClose) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE tasks SET status = $2, outcome = $3, agent = $4, note = $5,
                    completed_at = $6, reason = $7, contacted_at = $8, breach_rule = $9
                WHERE task_key = $1 AND status = 'open'
                """,
                close.task_key, close.status, close.outcome, close.agent, close.note,
                close.completed_at, close.reason, close.contacted_at, close.breach_rule,
            )
            reports = await write_carried(conn, close.records)
        await tell_own_case(reports)


async def _insert(conn: asyncpg.Connection, task: TaskInput, caps_left: dict[str, int]) -> None:
    """The queue's row (keyed: a retry inserts nothing). The room under the caps is the
    reservation's when the task carried one (a retry's answer has none: the row has it)."""
    await conn.execute(
        """
        INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by,
            created_at, rule_pack, timezone, window_start, window_end, work_windows, caps_left)
        VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13::jsonb,$14::jsonb)
        ON CONFLICT (task_key) DO NOTHING
        """,
        task.task_key, task.loan_id, task.workflow_id, task.kind, task.step_id, task.priority,
        task.due_by, task.created_at, task.rule_pack or None, task.timezone or None,
        task.window_start or None, task.window_end or None, json.dumps(task.work_windows),
        json.dumps(caps_left or task.caps_left),
    )
