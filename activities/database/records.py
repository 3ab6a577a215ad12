"""Case records in PostgreSQL: snapshots, domain events, payments, stage changes, legal actions.

Every insert is keyed, so an activity retried after a timeout or a crash writes nothing twice.
"""

from __future__ import annotations

import json

import asyncpg
from temporalio import activity

from activities.database.contacts import write_contact
from activities.database.delivery_status import tell_own_case
from activities.database.placements import write_placement
from contracts.activity_io import RECORD, RECORD_LEGAL_ACTION, LegalInput, RecordBatch, RecordResult
from contracts.messages import DeliveryReport


class RecordActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=RECORD)
    async def record(self, batch: RecordBatch) -> RecordResult:
        """Write one batch in one transaction; returns how many rows were new, and its events."""
        async with self.pool.acquire() as conn, conn.transaction():
            written, reports = await write_batch(conn, batch)
        await tell_own_case(reports)
        return RecordResult(written=written, events=batch.events)

    @activity.defn(name=RECORD_LEGAL_ACTION)
    async def record_legal_action(self, inp: LegalInput) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            reports = await write_carried(conn, inp.records)
            status = await conn.execute(
                """
                INSERT INTO legal_actions (idempotency_key, loan_id, action, documents,
                    created_at)
                VALUES ($1,$2,$3,$4::jsonb,$5) ON CONFLICT (idempotency_key) DO NOTHING
                """,
                inp.key, inp.loan_id, inp.action, json.dumps(inp.documents, default=str),
                inp.created_at,
            )
        await tell_own_case(reports)
        return status.endswith(" 1")


async def write_carried(conn: asyncpg.Connection,
                        batch: RecordBatch | None) -> list[DeliveryReport]:
    """The writes an action carries (workflows/carried_writes.py), if it carries any, in the
    caller's transaction: the delivery reports to tell once it has committed."""
    return [] if batch is None else (await write_batch(conn, batch))[1]


async def write_batch(conn: asyncpg.Connection, batch: RecordBatch,
                      ) -> tuple[int, list[DeliveryReport]]:
    """Write one batch in the caller's transaction: how many rows were new, and the delivery
    reports that came before their contact row (for the caller to tell once it has committed)."""
    written = 0
    reports: list[DeliveryReport] = []
    for rec in batch.contacts:
        reports += await write_contact(conn, rec)
    if batch.case is not None:
        c = batch.case
        # Before the case's row: see infra/migrations/011_case_write_lock.sql.
        await conn.execute("SELECT case_write_lock($1)", c.loan_id)
        await conn.execute(
            """
            INSERT INTO cases (loan_id, workflow_id, borrower_key, policy_name,
                policy_version, segment, rule_pack, currency, amount_placed, outstanding,
                paid_total, stage, state, days_past_due, assigned_agent, due_date,
                opened_at, closed_at, close_reason, updated_at, experiment, arm)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,
                $21,$22)
            ON CONFLICT (loan_id) DO UPDATE SET
                outstanding = EXCLUDED.outstanding, paid_total = EXCLUDED.paid_total,
                stage = EXCLUDED.stage, state = EXCLUDED.state,
                days_past_due = EXCLUDED.days_past_due,
                assigned_agent = EXCLUDED.assigned_agent, due_date = EXCLUDED.due_date,
                closed_at = EXCLUDED.closed_at, close_reason = EXCLUDED.close_reason,
                updated_at = EXCLUDED.updated_at
            WHERE cases.updated_at <= EXCLUDED.updated_at
            """,
            c.loan_id, c.workflow_id, c.borrower_key, c.policy_name, c.policy_version,
            c.segment, c.rule_pack, c.currency, c.amount_placed, c.outstanding,
            c.paid_total, c.stage, c.state, c.days_past_due, c.assigned_agent, c.due_date,
            c.opened_at, c.closed_at, c.close_reason, c.updated_at, c.experiment, c.arm,
        )
    for e in batch.events:
        status = await conn.execute(
            """
            INSERT INTO events (idempotency_key, loan_id, kind, actor, summary, rule,
                detail, occurred_at)
            VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8)
            ON CONFLICT (idempotency_key) DO NOTHING
            """,
            e.key, e.loan_id, e.kind, e.actor, e.summary, e.rule,
            json.dumps(e.detail, default=str), e.occurred_at,
        )
        written += status.endswith(" 1")
    for p in batch.payments:
        status = await conn.execute(
            """
            INSERT INTO payments (loan_id, payment_id, amount, currency, paid_at,
                allocation)
            VALUES ($1,$2,$3,$4,$5,$6::jsonb)
            ON CONFLICT (loan_id, payment_id) DO NOTHING
            """,
            p.loan_id, p.payment_id, p.amount, p.currency, p.paid_at,
            json.dumps(p.allocation),
        )
        written += status.endswith(" 1")
    for u in batch.unapplied:
        # Keyed by the payment id: a retry writes nothing twice; a later report of the
        # same id that was applied resolves the row.
        status = await conn.execute(
            """
            INSERT INTO unapplied_payments (loan_id, payment_id, amount, currency,
                received_at, reason, status)
            VALUES ($1,$2,$3,$4,$5,$6,$7)
            ON CONFLICT (loan_id, payment_id) DO UPDATE SET status = EXCLUDED.status
            WHERE unapplied_payments.status <> EXCLUDED.status
            """,
            u.loan_id, u.payment_id, u.amount, u.currency, u.received_at, u.reason,
            u.status,
        )
        written += status.endswith(" 1")
    for s in batch.stage_changes:
        status = await conn.execute(
            """
            INSERT INTO stage_history (idempotency_key, loan_id, from_stage, to_stage,
                occurred_at)
            VALUES ($1,$2,$3,$4,$5) ON CONFLICT (idempotency_key) DO NOTHING
            """,
            s.key, s.loan_id, s.from_stage, s.to_stage, s.occurred_at,
        )
        written += status.endswith(" 1")
    for placed in batch.placements:
        await write_placement(conn, placed)
    return written, reports
