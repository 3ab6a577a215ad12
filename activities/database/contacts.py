"""Contact decisions in PostgreSQL, and the atomic reservation that keeps borrower-wide caps.

A borrower with two overdue loans has two workflows; the caps that count per borrower or per contact
number are checked and the attempt written under one advisory lock per borrower, so the two
workflows cannot both take the last call of the day.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from temporalio import activity

from activities.database.delivery_status import (
    link_early_reports,
    lock_for_contact,
    tell_own_case,
)
from contracts.activity_io import (
    RECORD_CONTACT,
    RESERVE_CONTACT,
    ContactDecision,
    ContactRecord,
    ContactRequest,
)
from contracts.messages import DeliveryReport
from policies import compliance

ATTEMPT = "sent"  # the decision written for a contact that was made
# Decisions the caps count: contacts made, within the rules or not.
MADE = ["sent", "breach"]


def _outcome_for_caps(outcome: str | None) -> str:
    if outcome in ("connected", "pending", "unanswered"):
        return outcome
    return "sent"


async def write_contact(conn: asyncpg.Connection, rec: ContactRecord) -> list[DeliveryReport]:
    """Insert a decision row, or set the outcome of an attempt already written (keyed: retries
    are no-ops), in the caller's transaction. A message written as sent gets the providers'
    reports about it that came first (delivery_status.py); returns the ones the case must be
    told of, for the caller to tell once the transaction has committed."""
    provider_id = await lock_for_contact(conn, rec.key) if rec.decision == ATTEMPT else None
    await conn.execute(
        """
        INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key, channel,
            step_id, stage, template, decision, rule, reason, outcome, occurred_at, local_date)
        VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)
        ON CONFLICT (idempotency_key) DO UPDATE SET
            -- A send the provider refused for good was not a contact: it stops counting
            -- towards the caps; nor was a task withdrawn before anyone called. A call made
            -- outside the rules is a breach (it still counts, like 'sent').
            decision = CASE WHEN EXCLUDED.decision IN ('failed', 'withdrawn', 'breach')
                THEN EXCLUDED.decision ELSE contacts.decision END,
            outcome = COALESCE(EXCLUDED.outcome, contacts.outcome),
            rule = COALESCE(EXCLUDED.rule, contacts.rule),
            reason = COALESCE(EXCLUDED.reason, contacts.reason),
            -- An agent's call is recorded when it happened, not when its task was created.
            occurred_at = CASE WHEN $15 THEN EXCLUDED.occurred_at ELSE contacts.occurred_at END,
            local_date = CASE WHEN $15 THEN COALESCE(EXCLUDED.local_date, contacts.local_date)
                ELSE contacts.local_date END
        """,
        rec.key, rec.loan_id, rec.borrower_key, rec.contact_key, rec.channel, rec.step_id,
        rec.stage, rec.template, rec.decision, rec.rule, rec.reason, rec.outcome, rec.at,
        rec.local_date, rec.moved,
    )
    if rec.decision != ATTEMPT:
        return []
    return await link_early_reports(conn, rec.key, provider_id)


async def reserve(conn: asyncpg.Connection, req: ContactRequest) -> ContactDecision:
    """The reservation, in the caller's transaction: under one advisory lock per borrower, the
    caps checked against every contact made to that borrower and, if it is allowed (and not
    only a check), the attempt written. A retry of a reservation that went through gets its
    earlier answer."""
    lookback = max((c.period_days for c in req.rule_pack.caps), default=1)
    lookback = max(lookback, req.rule_pack.post_conversation_quiet_days) + 1
    # The case's lock first, as every write of its case takes it (011_case_write_lock.sql), then
    # the borrower's.
    await conn.execute("SELECT case_write_lock($1)", req.loan_id)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       req.borrower_key)
    earlier = None if req.check_only else await conn.fetchrow(
        "SELECT decision, rule, reason FROM contacts WHERE idempotency_key = $1", req.key
    )
    if earlier is not None:  # a retry of a reservation that went through
        return ContactDecision(
            allowed=earlier["decision"] == ATTEMPT,
            rule=earlier["rule"],
            reason=earlier["reason"] or "",
            retry_at=None,
        )
    # An opt-out or a suppressed address (the webhooks write them, keyed by the hashed
    # address, so they hold across every loan of that number or address) comes first.
    suppressed = await conn.fetchrow(
        """
        SELECT rule, reason FROM contact_suppressions
        WHERE contact_key = $1 AND channel = $2 AND lifted_at IS NULL
        ORDER BY created_at LIMIT 1
        """,
        req.contact_key, req.channel,
    )
    if suppressed is not None:
        return ContactDecision(allowed=False, rule=suppressed["rule"],
                               reason=suppressed["reason"], retry_at=None,
                               suppressed=True)
    rows = await conn.fetch(
        """
        SELECT occurred_at, channel, loan_id, contact_key, outcome FROM contacts
        WHERE borrower_key = $1 AND decision = ANY($2::text[]) AND occurred_at > $3
            AND idempotency_key IS DISTINCT FROM $4
        """,
        req.borrower_key, MADE, req.at - timedelta(days=lookback), req.exclude_key,
    )
    attempts = [
        compliance.Attempt(
            at=r["occurred_at"],
            channel=r["channel"],
            loan_id=r["loan_id"],
            contact_key=r["contact_key"],
            outcome=_outcome_for_caps(r["outcome"]),
        )
        for r in rows
    ]
    decision = compliance.evaluate_caps(
        req.rule_pack,
        channel=req.channel,
        at=req.at,
        tz=req.timezone,
        loan_id=req.loan_id,
        contact_key=req.contact_key,
        attempts=attempts,
    )
    caps_left = compliance.caps_left(
        req.rule_pack, channel=req.channel, at=req.at, tz=req.timezone,
        loan_id=req.loan_id, contact_key=req.contact_key, attempts=attempts,
    )
    if decision.allowed and not req.check_only:
        caps_left = {cap: max(0, n - 1) for cap, n in caps_left.items()}
        local_date = compliance.local(req.at, req.timezone).date()
        await conn.execute(
            """
            INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key,
                channel, step_id, stage, template, decision, rule, reason, outcome,
                occurred_at, local_date)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,'pending',$12,$13)
            """,
            req.key, req.loan_id, req.borrower_key, req.contact_key, req.channel,
            req.step_id, req.stage, req.template, ATTEMPT,
            decision.rule or f"{req.rule_pack.name}.window_and_caps",
            decision.reason, req.at, local_date,
        )
    return ContactDecision(
        allowed=decision.allowed,
        rule=decision.rule,
        reason=decision.reason,
        retry_at=decision.retry_at,
        caps_left=caps_left,
    )


class ContactActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=RESERVE_CONTACT)
    async def reserve_contact(self, req: ContactRequest) -> ContactDecision:
        async with self.pool.acquire() as conn, conn.transaction():
            return await reserve(conn, req)

    @activity.defn(name=RECORD_CONTACT)
    async def record_contact(self, rec: ContactRecord) -> None:
        """Insert a decision row, or set the outcome of an attempt already written."""
        async with self.pool.acquire() as conn, conn.transaction():
            reports = await write_contact(conn, rec)
        await tell_own_case(reports)
