"""The work queue agents and dialers read: calls and field visits, each with a deadline."""

from __future__ import annotations

import json

import asyncpg
from temporalio import activity

from contracts.activity_io import CLOSE_TASK, CREATE_TASK, TaskClose, TaskInput


class TaskActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=CREATE_TASK)
    async def create_task(self, task: TaskInput) -> bool:
        status = await self.pool.execute(
            """
            INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by,
                created_at, rule_pack, timezone, window_start, window_end, work_windows,
                caps_left)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13::jsonb,$14::jsonb)
            ON CONFLICT (task_key) DO NOTHING
            """,
            task.task_key, task.loan_id, task.workflow_id, task.kind, task.step_id, task.priority,
            task.due_by, task.created_at, task.rule_pack or None, task.timezone or None,
            task.window_start or None, task.window_end or None, json.dumps(task.work_windows),
            json.dumps(task.caps_left),
        )
        return status.endswith(" 1")

    @activity.defn(name=CLOSE_TASK)
    async def close_task(self, close: TaskClose) -> None:
        await self.pool.execute(
            """
            UPDATE tasks SET status = $2, outcome = $3, agent = $4, note = $5, completed_at = $6,
                reason = $7, contacted_at = $8, breach_rule = $9
            WHERE task_key = $1 AND status = 'open'
            """,
            close.task_key, close.status, close.outcome, close.agent, close.note,
            close.completed_at, close.reason, close.contacted_at, close.breach_rule,
        )
