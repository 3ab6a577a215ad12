"""A synthetic book of cases in PostgreSQL, for benchmarks and reports: `seed_book(pool, 100_000)`.

Rows look like what the workflows write (cases, stage_history, events, contacts, payments) and are
loaded with COPY, in chunks, in one transaction. Loan ids start with `BOOK-`, policy name "book",
so a test or a benchmark can find and remove them (`clear_book`). The same `n` and `seed` give the
same rows, byte for byte: every random draw comes from one `random.Random(seed)`, and times are
laid out before the fixed instant `end` (default 2026-01-01 UTC), not before "now".

The model, per case: opened in the year before `end` under policy version 2025.1, 2025.2 or
2025.3 (a champion and two challengers, split at random), in one of four segments; it moves down
the ladder (early at D+1, middle at D+7, late at D+30, legal at D+60, written off at D+180, D+120
for closed-end loans) unless it cures first (paid in full, or settled at 60%), with cure odds
that fall stage by stage and improve with each policy version. Promises are kept by cases
about to cure and broken by others; partial payments, contacts and a few closures (bankruptcy)
fill in the rest.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import asyncpg

from contracts.messages import STAGE_ORDER

BOOK_PREFIX: Final = "BOOK-"
BOOK_POLICY: Final = "book"
BOOK_END: Final = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK: Final = 10_000

_STAGES: Final = tuple(s.value for s in STAGE_ORDER)
# Days past due at which a case enters each stage after pre_due.
_ENTRY_DPD: Final = {"early": 1, "middle": 7, "late": 30, "legal": 60, "written_off": 180}
# Chance to cure while in each stage, before the next one comes due.
_CURE: Final = {"pre_due": 0.45, "early": 0.40, "middle": 0.28, "late": 0.18, "legal": 0.12}
_SEGMENTS: Final = (("standard", 0.5, 1.0), ("small_balance", 0.2, 0.9), ("high_risk", 0.2, 0.7),
                    ("closed_end", 0.1, 1.0))
# Champion and challengers, assigned at random the way a policy test would split placements.
_VERSIONS: Final = (("2025.1", 0.5, 1.0), ("2025.2", 0.3, 1.08), ("2025.3", 0.2, 1.15))
_CHANNELS: Final = ("sms", "email", "call")

CASE_COLUMNS: Final = (
    "loan_id", "workflow_id", "borrower_key", "policy_name", "policy_version", "segment",
    "rule_pack", "currency", "amount_placed", "outstanding", "paid_total", "stage", "state",
    "days_past_due", "assigned_agent", "due_date", "opened_at", "closed_at", "close_reason",
    "updated_at",
)
STAGE_COLUMNS: Final = ("idempotency_key", "loan_id", "from_stage", "to_stage", "occurred_at")
EVENT_COLUMNS: Final = ("idempotency_key", "loan_id", "kind", "actor", "summary", "occurred_at")
CONTACT_COLUMNS: Final = ("idempotency_key", "loan_id", "borrower_key", "contact_key", "channel",
                          "step_id", "stage", "decision", "rule", "reason", "outcome",
                          "occurred_at")
PAYMENT_COLUMNS: Final = ("loan_id", "payment_id", "amount", "currency", "paid_at")
_TABLES: Final = ("cases", "stage_history", "events", "contacts", "payments", "tasks",
                  "legal_actions")


@dataclass
class _Rows:
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    stages: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    payments: list[tuple[Any, ...]] = field(default_factory=list)


def _cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


def _between(rng: random.Random, a: datetime, b: datetime) -> datetime:
    if b <= a:
        return a
    return a + timedelta(seconds=rng.uniform(0, (b - a).total_seconds()))


def _at_dpd(due: date, dpd: int) -> datetime:
    """02:00 UTC (10:00 in Shanghai) on the day `dpd` days after the due date."""
    return datetime(due.year, due.month, due.day, 2, tzinfo=UTC) + timedelta(days=dpd)


def _case(rng: random.Random, i: int, end: datetime, rows: _Rows) -> None:
    loan_id = f"{BOOK_PREFIX}{i:07d}"
    borrower = f"book:{i}"
    opened = end - timedelta(seconds=rng.uniform(60, 365 * 86400))
    segment, boost = rng.choices([(s, f) for s, _, f in _SEGMENTS], [w for _, w, _ in _SEGMENTS])[0]
    version, version_boost = rng.choices([(v, f) for v, _, f in _VERSIONS],
                                         [w for _, w, _ in _VERSIONS])[0]
    if segment == "small_balance":
        cents = rng.randint(5_000, 49_999)
    else:
        cents = min(max(int(math.exp(rng.gauss(8.0, 0.9)) * 100), 50_000), 20_000_000)
    placed = _cents(cents)
    if rng.random() < 0.6:
        due = opened.date() + timedelta(days=rng.randint(1, 4))
    else:
        due = opened.date() - timedelta(days=rng.randint(1, 20))
    write_off_dpd = 120 if segment == "closed_end" else 180
    entries = {**_ENTRY_DPD, "written_off": write_off_dpd}

    seq = 0

    def key() -> str:
        nonlocal seq
        seq += 1
        return f"{loan_id}/{seq}"

    def event(kind: str, summary: str, at: datetime, actor: str | None = None) -> None:
        rows.events.append((key(), loan_id, kind, actor, summary, at))

    def contacts_for(stage: str, start: datetime, stop: datetime) -> None:
        for _ in range(rng.randint(1, 2)):
            channel = rng.choice(_CHANNELS)
            at = _between(rng, start, stop)
            rows.contacts.append((key(), loan_id, borrower, f"c:{i}:{channel}", channel,
                                  f"{stage}-{channel}", stage, "sent", "cn.window_and_caps",
                                  "within the window and caps",
                                  rng.choice(("connected", "unanswered"))
                                  if channel == "call" else "sent",
                                  at))
        if rng.random() < 0.2:
            at = _between(rng, start, stop)
            rows.contacts.append((key(), loan_id, borrower, f"c:{i}:sms", "sms", f"{stage}-sms",
                                  stage, "deferred", "cn.quiet_hours", "outside the contact window",
                                  None, at))

    dpd_open = (opened.date() - due).days
    stage = "pre_due" if dpd_open <= 0 else "early"
    event("case_opened", f"case opened under policy {BOOK_POLICY} {version}, segment {segment}",
          opened)
    rows.stages.append((key(), loan_id, None, stage, opened))
    stage_at = opened
    if dpd_open >= entries["middle"]:
        stage_at = opened + timedelta(minutes=1)
        rows.stages.append((key(), loan_id, stage, "middle", stage_at))
        event("stage_changed", f"stage {stage} -> middle", stage_at)
        stage = "middle"

    state, closed_at, close_reason = "active", None, None
    paid = Decimal("0")
    pay_no = 0

    def payment(amount: Decimal, at: datetime) -> None:
        nonlocal paid, pay_no
        pay_no += 1
        paid += amount
        rows.payments.append((loan_id, f"p{pay_no}", amount, "CNY", at))
        event("payment", f"payment p{pay_no} of {amount} CNY applied", at, "loan-system")

    bankrupt_at = opened + timedelta(days=rng.uniform(5, 200)) if rng.random() < 0.01 else None
    while True:
        index = _STAGES.index(stage)
        following = _STAGES[index + 1] if index + 1 < len(_STAGES) else None
        next_at = _at_dpd(due, entries[following]) if following else None
        if next_at is not None and next_at <= stage_at:
            next_at = stage_at + timedelta(minutes=1)
        horizon = min(next_at or end, end)
        contacts_for(stage, stage_at, horizon)
        if bankrupt_at is not None and bankrupt_at < horizon:
            state, closed_at, close_reason = "closed", max(bankrupt_at, stage_at), "bankruptcy"
            rows.stages.append((key(), loan_id, stage, "closed", closed_at))
            stage = "closed"
            break
        cure_odds = min(0.95, _CURE[stage] * boost * version_boost)
        if rng.random() < cure_odds:
            cured_at = _between(rng, stage_at, (next_at or end) - timedelta(minutes=1))
            if cured_at < end:
                if rng.random() < 0.6:
                    made = cured_at - timedelta(days=rng.uniform(1, 10))
                    made = max(made, stage_at)
                    event("promise", "promise to pay", made, f"agent-{rng.randint(1, 50)}")
                    event("promise_kept", "promise kept", cured_at, None)
                if rng.random() < 0.15:
                    payment((placed * Decimal("0.6")).quantize(Decimal("0.01")), cured_at)
                    state, close_reason = "settled", "settled"
                else:
                    parts = rng.randint(1, 3)
                    first = _cents(int(cents * rng.uniform(0.2, 0.5))) if parts > 1 else placed
                    if parts > 1:
                        payment(first, _between(rng, stage_at, cured_at))
                    payment(placed - paid, cured_at)
                    state, close_reason = "paid", "paid in full"
                closed_at = cured_at
                event("case_closed", f"case closed: {state} ({close_reason})", cured_at)
                break
        if rng.random() < 0.3 and stage != "pre_due":
            made = _between(rng, stage_at, horizon)
            broken_at = made + timedelta(days=5)
            if broken_at < horizon:
                agent = f"agent-{rng.randint(1, 50)}"
                event("promise", "promise to pay", made, agent)
                event("promise_broken", "promise broken", broken_at, agent)
        if following is None or next_at is None or next_at >= end:
            break
        rows.stages.append((key(), loan_id, stage, following, next_at))
        event("stage_changed", f"stage {stage} -> {following}", next_at)
        stage, stage_at = following, next_at
        if stage == "written_off":
            state, closed_at = "written_off", next_at
            close_reason = "written off at the end of the ladder"
            event("case_closed", f"case closed: written_off ({close_reason})", next_at)
            break
    if state in ("active", "written_off", "closed") and rng.random() < 0.25:
        payment(_cents(int(cents * rng.uniform(0.1, 0.4))),
                _between(rng, opened, closed_at or end))
    outstanding = Decimal("0") if state in ("paid", "settled") else placed - paid
    until = closed_at or end
    assigned_agent = f"agent-{rng.randint(1, 50)}" if rng.random() < 0.3 else None
    rows.cases.append((
        loan_id, f"collection-{loan_id}", borrower, BOOK_POLICY, version, segment, "cn", "CNY",
        placed, outstanding, paid, stage, state, (until.date() - due).days, assigned_agent, due,
        opened, closed_at, close_reason, until,
    ))


def generate(n: int, *, seed: int = 1, end: datetime = BOOK_END, start: int = 0,
             chunk: int = CHUNK) -> Iterator[_Rows]:
    """The book's rows, `chunk` cases at a time (deterministic for a given n, seed and end)."""
    rng = random.Random(seed)
    for lo in range(start, n, chunk):
        rows = _Rows()
        for i in range(lo, min(n, lo + chunk)):
            _case(rng, i + 1, end, rows)
        yield rows


async def _defer_report(conn: asyncpg.Connection) -> None:
    """Leave the report rollup's triggers out for the rest of this transaction, which refreshes
    the cases it writes itself: once per case instead of once per table and chunk."""
    await conn.execute("SET LOCAL collections.report_deferred = on")


async def _refresh_report(conn: asyncpg.Connection, loans: list[str] | None = None) -> None:
    """Bring the report rollup up to date for these loans (default: every BOOK- case it holds),
    with the deltas folded in, so that a report after a bulk load reads few rows."""
    if loans is None:
        await conn.execute("SELECT report_refresh(ARRAY(SELECT loan_id FROM report_loans"
                           " WHERE starts_with(loan_id, $1)))", BOOK_PREFIX)
    else:
        await conn.execute("SELECT report_refresh($1::text[])", loans)
    await conn.execute("SELECT report_compact()")


async def _delete_book(conn: asyncpg.Connection) -> None:
    await _defer_report(conn)
    for table in _TABLES:
        await conn.execute(f"DELETE FROM {table} WHERE starts_with(loan_id, $1)", BOOK_PREFIX)
    await _refresh_report(conn)


async def clear_book(pool: asyncpg.Pool) -> None:
    """Remove every BOOK- row."""
    async with pool.acquire() as conn, conn.transaction():
        await _delete_book(conn)


async def seed_book(pool: asyncpg.Pool, n: int, *, seed: int = 1, end: datetime = BOOK_END) -> None:
    """Replace the BOOK- rows with a synthetic book of `n` cases (COPY, one transaction, the
    report rollup refreshed once per chunk of cases), then VACUUM ANALYZE the tables (planner
    statistics, index-only scans)."""
    if n < 0:
        raise ValueError("n must not be negative")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _delete_book(conn)
            chunks = generate(n, seed=seed, end=end)
            # Rows are built in a thread, so a worker sharing the event loop keeps running.
            while (rows := await asyncio.to_thread(next, chunks, None)) is not None:
                await conn.copy_records_to_table("cases", records=rows.cases, columns=CASE_COLUMNS)
                await conn.copy_records_to_table("stage_history", records=rows.stages,
                                                 columns=STAGE_COLUMNS)
                await conn.copy_records_to_table("events", records=rows.events,
                                                 columns=EVENT_COLUMNS)
                await conn.copy_records_to_table("contacts", records=rows.contacts,
                                                 columns=CONTACT_COLUMNS)
                await conn.copy_records_to_table("payments", records=rows.payments,
                                                 columns=PAYMENT_COLUMNS)
                await _refresh_report(conn, [case[0] for case in rows.cases])
        # Fresh statistics for the planner, and a visibility map for index-only scans.
        await conn.execute("VACUUM (ANALYZE) cases, stage_history, events, contacts, payments,"
                           " report_loans, report_rollup, report_delta")
