"""The report rollup (infra/migrations/003_report_rollup.sql) against the report computed from the
base tables. Through the activities' upserts and their retries, out-of-order and stale writes,
updates, deletes, COPY, bulk loads and concurrent writers, the rollup gives the same figures as
the scans, and holds exactly what a rebuild from scratch would."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from activities.database.contacts import ContactActivities, write_contact
from activities.database.records import RecordActivities
from bench.book import BOOK_POLICY, BOOK_PREFIX, clear_book, seed_book
from contracts.activity_io import (
    CaseSnapshot,
    ContactRecord,
    EventRecord,
    PaymentRecord,
    RecordBatch,
    StageChange,
)
from service import report as report_service
from service.report_figures import STAGE_RANKS

T0 = datetime(2025, 3, 10, 2, tzinfo=UTC)
LATER = datetime(2026, 6, 1, tzinfo=UTC)  # after every row these tests and the book write


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


_GROUP = "policy_version, segment, currency, part, month, state, rank, last_month, rolled"
_SUMS = ("sum(n)::bigint AS n, sum(placed) AS placed, sum(outstanding) AS outstanding,"
         " sum(amount) AS amount")
_NONZERO = "HAVING sum(n) <> 0 OR sum(placed) <> 0 OR sum(outstanding) <> 0 OR sum(amount) <> 0"
STORED_SQL = f"""
SELECT {_GROUP}, {_SUMS}
FROM (SELECT policy_name, {_GROUP}, n, placed, outstanding, amount FROM report_rollup
      UNION ALL
      SELECT policy_name, {_GROUP}, n, placed, outstanding, amount FROM report_delta) r
WHERE policy_name = $1
GROUP BY {_GROUP} {_NONZERO} ORDER BY {_GROUP}
"""
SCRATCH_SQL = f"""
SELECT {_GROUP}, {_SUMS}
FROM (SELECT l.policy_version, l.segment, l.currency, p.*
      FROM report_parts(ARRAY(SELECT loan_id FROM cases WHERE policy_name = $1)) l,
           unnest(l.parts) p) r
GROUP BY {_GROUP} {_NONZERO} ORDER BY {_GROUP}
"""


async def stored_groups(pool: asyncpg.Pool, policy: str) -> list[asyncpg.Record]:
    return await pool.fetch(STORED_SQL, policy)


async def assert_consistent(pool: asyncpg.Pool, policy: str) -> dict[str, Any]:
    """The rollup answers, with the figures the scans give, and holds what a rebuild would."""
    as_of = LATER
    assert await report_service._rollup_rows(pool, as_of, policy) is not None
    fast = (await report_service.portfolio_report(pool, as_of=as_of, policy_name=policy)).to_json()
    slow = (await report_service.portfolio_report(pool, as_of=as_of, policy_name=policy,
                                      rollup=False)).to_json()
    assert fast == slow
    assert await stored_groups(pool, policy) == await pool.fetch(SCRATCH_SQL, policy)

    def loans(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
        return [(r["loan_id"], r["policy_version"], r["segment"], r["currency"], r["latest"],
                 sorted(tuple(p) for p in r["parts"])) for r in rows]

    kept = await pool.fetch("SELECT * FROM report_loans WHERE policy_name = $1 ORDER BY loan_id",
                            policy)
    fresh = await pool.fetch(
        "SELECT * FROM report_parts(ARRAY(SELECT loan_id FROM cases WHERE policy_name = $1))"
        " ORDER BY loan_id", policy)
    assert loans(kept) == loans(fresh)
    return fast


def figures(report: dict[str, Any], version: str, segment: str = "standard",
            currency: str = "CNY") -> dict[str, Any]:
    return next(r for r in report["rows"] if (r["policy_version"], r["segment"], r["currency"])
                == (version, segment, currency))


@dataclass
class Case:
    """A case written the way the workflow writes it: snapshots through `record`."""

    snap: CaseSnapshot
    clock: int = 0

    @classmethod
    def open(cls, policy: str, loan_id: str, *, version: str = "v1", segment: str = "standard",
             amount: str = "1000.00", opened: datetime = T0, currency: str = "CNY") -> Case:
        return cls(CaseSnapshot(
            loan_id=loan_id, workflow_id=f"collection-{loan_id}", borrower_key=f"b:{loan_id}",
            policy_name=policy, policy_version=version, segment=segment, rule_pack="cn",
            currency=currency, amount_placed=Decimal(amount), outstanding=Decimal(amount),
            paid_total=Decimal("0"), stage="pre_due", state="active", days_past_due=0,
            assigned_agent=None, due_date=date(2025, 3, 12), opened_at=opened, updated_at=opened,
        ))

    def next(self, **changes: Any) -> CaseSnapshot:
        """The next snapshot: a later updated_at, and the given changes."""
        self.clock += 1
        self.snap = replace(self.snap, updated_at=self.snap.opened_at
                            + timedelta(minutes=self.clock), **changes)
        return self.snap

    @property
    def loan_id(self) -> str:
        return self.snap.loan_id

    def stage(self, key: str, frm: str | None, to: str, when: datetime) -> StageChange:
        return StageChange(key=f"{self.loan_id}/{key}", loan_id=self.loan_id, from_stage=frm,
                           to_stage=to, occurred_at=when)

    def event(self, key: str, kind: str, when: datetime) -> EventRecord:
        return EventRecord(key=f"{self.loan_id}/{key}", loan_id=self.loan_id, kind=kind,
                           summary=kind, occurred_at=when)

    def payment(self, payment_id: str, amount: str, when: datetime) -> PaymentRecord:
        return PaymentRecord(loan_id=self.loan_id, payment_id=payment_id, amount=Decimal(amount),
                             currency=self.snap.currency, paid_at=when, allocation={})

    def contact(self, key: str, decision: str, when: datetime,
                outcome: str | None = None) -> ContactRecord:
        return ContactRecord(key=f"{self.loan_id}/{key}", loan_id=self.loan_id,
                             borrower_key=self.snap.borrower_key, contact_key=f"k:{self.loan_id}",
                             channel="sms", step_id="step", stage=self.snap.stage,
                             decision=decision, at=when, outcome=outcome)


async def test_rank_function_matches_stage_ranks(pool: asyncpg.Pool) -> None:
    ranks = await pool.fetch("SELECT s, report_stage_rank(s) AS rank FROM unnest($1::text[]) s",
                             [*STAGE_RANKS, "closed"])
    assert [r["rank"] for r in ranks] == [*range(len(STAGE_RANKS)), None]


async def test_rollup_follows_the_activities_writes(pool: asyncpg.Pool) -> None:
    policy = f"test-rollup-{uuid.uuid4().hex[:8]}"
    records, contacts = RecordActivities(pool), ContactActivities(pool)
    a = Case.open(policy, f"{policy}-A")
    b = Case.open(policy, f"{policy}-B", amount="2000.00")
    c = Case.open(policy, f"{policy}-C", version="v2", segment="small", amount="300.00")
    d = Case.open(policy, f"{policy}-D", currency="USD", opened=at(40))

    # A contact recorded before its case row: it counts once the case is there.
    await contacts.record_contact(a.contact("c1", "sent", at(1)))
    report = await assert_consistent(pool, policy)
    assert report["rows"] == []

    opening = [
        RecordBatch(case=a.snap, events=[a.event("e0", "case_opened", at(0))],
                    stage_changes=[a.stage("s0", None, "pre_due", at(0))]),
        RecordBatch(case=b.snap, stage_changes=[b.stage("s0", None, "early", at(0))]),
        RecordBatch(case=c.snap, stage_changes=[c.stage("s0", None, "early", at(0))]),
        RecordBatch(case=d.snap, stage_changes=[d.stage("s0", None, "pre_due", at(40))]),
    ]
    for batch in opening:
        await records.record(batch)
    report = await assert_consistent(pool, policy)
    v1 = figures(report, "v1")
    assert (v1["cases"], v1["placed"], v1["contacts_sent"]) == (2, "3000.00", 1)

    # Retries of the same batches (an activity retried after a timeout) change nothing.
    groups = await stored_groups(pool, policy)
    for batch in opening:
        await records.record(batch)
    await contacts.record_contact(a.contact("c1", "sent", at(1)))
    assert await stored_groups(pool, policy) == groups
    assert await assert_consistent(pool, policy) == report

    # The ladder moves on: stage changes, contacts, promises, payments, a case paid in full.
    await records.record(RecordBatch(
        case=a.next(stage="early"), stage_changes=[a.stage("s1", "pre_due", "early", at(3))]))
    await contacts.record_contact(b.contact("c1", "sent", at(2)))
    await contacts.record_contact(b.contact("c2", "deferred", at(2)))
    await contacts.record_contact(c.contact("c1", "sent", at(2)))
    await records.record(RecordBatch(
        case=b.next(stage="middle"), stage_changes=[b.stage("s1", "early", "middle", at(8))],
        events=[b.event("e1", "promise_broken", at(12))]))
    await records.record(RecordBatch(
        case=a.next(state="paid", outstanding=Decimal("0"), paid_total=Decimal("1000.00"),
                    closed_at=at(5)),
        payments=[a.payment("p1", "1000.00", at(5))],
        events=[a.event("e1", "promise_kept", at(5)), a.event("e2", "case_closed", at(5))]))
    await records.record(RecordBatch(
        case=b.next(outstanding=Decimal("1700.00"), paid_total=Decimal("300.00")),
        payments=[b.payment("p1", "300.00", at(15))]))
    # The provider answered B's contact (outcome only) and refused C's for good (no contact).
    await contacts.record_contact(b.contact("c1", "sent", at(2), outcome="delivered"))
    await contacts.record_contact(c.contact("c1", "failed", at(2)))
    report = await assert_consistent(pool, policy)
    v1 = figures(report, "v1")
    assert (v1["collected"], v1["cure_rate"], v1["contacts_sent"]) == ("1300.00", "0.5000", 2)
    assert (v1["promises_kept"], v1["promises_broken"]) == (1, 1)
    assert figures(report, "v2", "small")["contacts_sent"] == 0

    # A snapshot older than the one recorded (a late retry) is not applied, and counts nothing.
    stale = replace(b.snap, outstanding=Decimal("1.00"), state="settled",
                    updated_at=b.snap.updated_at - timedelta(seconds=30))
    groups = await stored_groups(pool, policy)
    await records.record(RecordBatch(case=stale))
    assert await stored_groups(pool, policy) == groups

    # A stage change recorded out of order: C went early -> middle before middle -> late.
    await records.record(RecordBatch(
        case=c.next(stage="late"), stage_changes=[c.stage("s2", "middle", "late", at(20))]))
    await assert_consistent(pool, policy)
    await records.record(RecordBatch(stage_changes=[c.stage("s1", "early", "middle", at(10))]))
    report = await assert_consistent(pool, policy)
    assert figures(report, "v2", "small")["reached"]["middle"] == 1

    # A report as of a time before some of these rows cannot use the rollup; it scans.
    assert await report_service._rollup_rows(pool, at(10), policy) is None

    # Writes outside the activities: several rows in one statement, a key moved, deletes, COPY.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO payments (loan_id, payment_id, amount, currency, paid_at)"
            " VALUES ($1, 'p2', 10.50, 'CNY', $3), ($1, 'p3', 20.25, 'CNY', $4),"
            " ($2, 'p1', 7.00, 'CNY', $4)", b.loan_id, c.loan_id, at(31), at(33))
        await assert_consistent(pool, policy)
        await conn.execute("UPDATE cases SET segment = 'moved' WHERE loan_id = $1", d.loan_id)
        await assert_consistent(pool, policy)
        await conn.execute("DELETE FROM payments WHERE loan_id = $1 AND payment_id = 'p2'",
                           b.loan_id)
        await conn.execute("UPDATE stage_history SET occurred_at = $2 WHERE idempotency_key = $1",
                           f"{b.loan_id}/s1", at(35))
        await assert_consistent(pool, policy)
        await conn.execute("DELETE FROM cases WHERE loan_id = $1", c.loan_id)  # its rows stay
        await assert_consistent(pool, policy)
        e = Case.open(policy, f"{policy}-E", version="v2", amount="55.55")
        await conn.copy_records_to_table(
            "cases", columns=["loan_id", "workflow_id", "borrower_key", "policy_name",
                              "policy_version", "segment", "rule_pack", "currency",
                              "amount_placed", "outstanding", "stage", "state", "due_date",
                              "opened_at", "updated_at"],
            records=[(e.loan_id, "w", "b", policy, "v2", "standard", "cn", "CNY",
                      Decimal("55.55"), Decimal("55.55"), "early", "active", date(2025, 3, 1),
                      at(1), at(1))])
        await conn.copy_records_to_table(
            "stage_history", columns=["idempotency_key", "loan_id", "to_stage", "occurred_at"],
            records=[(f"{e.loan_id}/s0", e.loan_id, "early", at(1)),
                     (f"{e.loan_id}/s1", e.loan_id, "late", at(29))])
        report = await assert_consistent(pool, policy)
        assert figures(report, "v2")["cases"] == 1

    # A rebuild from scratch finds what the triggers kept.
    groups = await stored_groups(pool, policy)
    await pool.execute("SELECT report_rebuild()")
    assert await stored_groups(pool, policy) == groups
    assert await assert_consistent(pool, policy) == report


async def test_a_case_and_its_contact_written_at_once(pool: asyncpg.Pool) -> None:
    """The case row and a contact of the same case, in two transactions open at the same time:
    whichever commits second counts the contact, once."""
    policy = f"test-rollup-{uuid.uuid4().hex[:8]}"
    x = Case.open(policy, f"{policy}-X")
    y = Case.open(policy, f"{policy}-Y")
    records, contacts = RecordActivities(pool), ContactActivities(pool)
    async with pool.acquire() as first, pool.acquire() as second:
        # The case first, the contact while the case is not committed yet...
        tx = first.transaction()
        await tx.start()
        await insert_case(first, x.snap)
        contact = asyncio.create_task(contacts.record_contact(x.contact("c1", "sent", at(1))))
        await asyncio.sleep(0.3)
        assert not contact.done()  # waits for the case's transaction
        await tx.commit()
        await contact
        # ... and the other way round.
        tx = second.transaction()
        await tx.start()
        await write_contact(second, y.contact("c1", "sent", at(1)))  # in this transaction
        case = asyncio.create_task(records.record(RecordBatch(case=y.snap)))
        await asyncio.sleep(0.3)
        assert not case.done()
        await tx.commit()
        await case
    report = await assert_consistent(pool, policy)
    assert figures(report, "v1")["contacts_sent"] == 2


async def insert_case(conn: asyncpg.Connection, c: CaseSnapshot) -> None:
    await conn.execute(
        """INSERT INTO cases (loan_id, workflow_id, borrower_key, policy_name, policy_version,
               segment, rule_pack, currency, amount_placed, outstanding, paid_total, stage, state,
               days_past_due, due_date, opened_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)""",
        c.loan_id, c.workflow_id, c.borrower_key, c.policy_name, c.policy_version, c.segment,
        c.rule_pack, c.currency, c.amount_placed, c.outstanding, c.paid_total, c.stage, c.state,
        c.days_past_due, c.due_date, c.opened_at, c.updated_at)


async def test_concurrent_writers_keep_the_rollup_exact(pool: asyncpg.Pool) -> None:
    policy = f"test-rollup-{uuid.uuid4().hex[:8]}"
    rng = random.Random(11)
    records, contacts = RecordActivities(pool), ContactActivities(pool)
    cases = [Case.open(policy, f"{policy}-{i:02d}", version=rng.choice(["v1", "v2"]),
                       segment=rng.choice(["standard", "small"]), amount=f"{100 + i}.10")
             for i in range(24)]

    def writes(k: Case) -> list[Any]:
        """What a case's workflow and its retries write, as coroutine factories."""
        snaps = [k.next(), k.next(stage="early"), k.next(stage="middle"),
                 k.next(outstanding=Decimal("50.00"), paid_total=k.snap.amount_placed - 50)]
        return [
            lambda: records.record(RecordBatch(
                case=snaps[0], stage_changes=[k.stage("s0", None, "pre_due", at(0))])),
            lambda: contacts.record_contact(k.contact("c1", "sent", at(1))),
            lambda: contacts.record_contact(k.contact("c2", "sent", at(2))),
            lambda: records.record(RecordBatch(
                case=snaps[1], stage_changes=[k.stage("s1", "pre_due", "early", at(3))],
                events=[k.event("e1", "promise_broken", at(4))])),
            lambda: records.record(RecordBatch(
                case=snaps[2], stage_changes=[k.stage("s2", "early", "middle", at(9))])),
            lambda: records.record(RecordBatch(
                case=snaps[3], payments=[k.payment("p1", str(k.snap.amount_placed - 50), at(12))],
                events=[k.event("e2", "promise_kept", at(12))])),
            lambda: contacts.record_contact(k.contact("c2", "failed", at(2))),
        ]

    work = [w for k in cases for w in writes(k)]
    for _ in range(2):  # the second round: every write retried, in another order
        rng.shuffle(work)
        await asyncio.gather(*(w() for w in work))
    report = await assert_consistent(pool, policy)
    assert sum(r["cases"] for r in report["rows"]) == len(cases)
    assert sum(r["contacts_sent"] for r in report["rows"]) == len(cases)
    assert sum(r["promises_kept"] + r["promises_broken"] for r in report["rows"]) == 2 * len(cases)


async def test_seed_book_keeps_the_rollup(pool: asyncpg.Pool) -> None:
    try:
        await seed_book(pool, 1500, seed=5)
        report = await assert_consistent(pool, BOOK_POLICY)
        assert sum(r["cases"] for r in report["rows"]) == 1500
        await seed_book(pool, 700, seed=6)  # replaces the book
        report = await assert_consistent(pool, BOOK_POLICY)
        assert sum(r["cases"] for r in report["rows"]) == 700
    finally:
        await clear_book(pool)
    assert await stored_groups(pool, BOOK_POLICY) == []
    assert not await pool.fetchval(
        "SELECT count(*) FROM report_loans WHERE starts_with(loan_id, $1)", BOOK_PREFIX)
