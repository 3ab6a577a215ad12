"""Operator views: case lists (Temporal visibility and PostgreSQL), a case's merged history across
continue-as-new runs, the portfolio report against figures worked out by hand, the synthetic book,
the chart and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from bench.book import BOOK_PREFIX, clear_book, generate, seed_book
from cli import operators
from contracts.messages import Installment, PaymentInput, PlanInput, UpdateResult
from contracts.names import Update
from service import history as case_history
from service.case_filters import MAX_LIMIT, visibility_query
from service.errors import BadInput, NotFound
from service.listing import CaseRow, list_cases, list_cases_db
from service.report import portfolio_report
from service.report_chart import render_chart
from tests.helpers import eventually, make_loan, pinned, start_case, today_of
from workflows.collection_workflow import CollectionWorkflow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli_app() -> typer.Typer:
    app = typer.Typer()
    operators.commands.register(app)
    return app


# --------------------------------------------------------------------------- visibility_query

BASE = "WorkflowType = 'CollectionWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"


def test_visibility_query_strings() -> None:
    assert visibility_query() == BASE
    assert visibility_query(stage="legal", min_outstanding=10000) == (
        f"{BASE} AND CollectionStage = 'legal' AND OutstandingAmount >= 10000")
    assert visibility_query(
        state="active", min_outstanding=Decimal("500"), max_outstanding=20000, min_dpd=-3,
        max_dpd=90, agent="a.chen", policy_version="default@2026.11.1", currency="CNY",
    ) == (
        f"{BASE} AND CollectionState = 'active' AND OutstandingAmount >= 500"
        " AND OutstandingAmount <= 20000 AND DaysPastDue >= -3 AND DaysPastDue <= 90"
        " AND AssignedAgent = 'a.chen' AND PolicyVersion = 'default@2026.11.1' AND Currency = 'CNY'"
    )
    # A bare policy name: every version of it.
    assert visibility_query(policy_version="us_default") == (
        f"{BASE} AND PolicyVersion STARTS_WITH 'us_default@'")
    assert visibility_query(agent="王芳") == f"{BASE} AND AssignedAgent = '王芳'"


@pytest.mark.parametrize("filters", [
    {"stage": "legal' OR WorkflowType != 'x"},
    {"stage": "Legal"},
    {"state": "open"},
    {"agent": "x' OR '1'='1"},
    {"agent": 'a"b'},
    {"agent": "back\\slash"},
    {"agent": "line\nbreak"},
    {"agent": " padded"},
    {"agent": ""},
    {"agent": "a" * 65},
    {"policy_version": "default@2026'"},
    {"policy_version": "de fault"},
    {"policy_version": "@2026.1"},
    {"currency": "cny"},
    {"currency": "CN'"},
    {"min_outstanding": -1},
    {"min_outstanding": 10.5},
    {"min_outstanding": Decimal("10.50")},
    {"min_outstanding": True},
    {"min_outstanding": "1e3"},
    {"min_outstanding": 200, "max_outstanding": 100},
    {"min_dpd": 10, "max_dpd": 5},
    {"max_dpd": 10**9},
])
def test_visibility_query_rejects(filters: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        visibility_query(**filters)


async def test_list_cases_db_rejects_bad_limit(pool: asyncpg.Pool) -> None:
    for limit in (0, -5, MAX_LIMIT + 1):
        with pytest.raises(BadInput):
            await list_cases_db(pool, limit=limit)


# --------------------------------------------------------------------------- list on the dev server


async def test_list_cases_matches_filters(
    dev_env: WorkflowEnvironment, dev_worker: Worker, pool: asyncpg.Pool,
) -> None:
    client = dev_env.client
    today = today_of(await dev_env.get_current_time())
    # Balances in a range of their own, so other tests' cases never match.
    base = 3_000_000 + random.randrange(10_000) * 100
    tag = uuid.uuid4().hex[:8]
    agent = f"agent-{tag}"

    def loan(n: int, amount: int, due: date):
        return make_loan(f"OPL{tag}{n}", due, amount_overdue=Decimal(f"{amount}.75"))

    waiting = [loan(i, base + 1000 * i, today + timedelta(days=30)) for i in (1, 2, 3)]
    overdue = loan(4, base + 5000, today - timedelta(days=40))  # the D+35 steps are due: late
    planned = loan(5, base + 7000, today + timedelta(days=30))  # plan (agent), then paid in full
    for ln in [*waiting, overdue, planned]:
        await start_case(client, ln, "dev-collections", policy=pinned(ln))
    handle = client.get_workflow_handle_for(CollectionWorkflow.run, f"collection-{planned.loan_id}")
    half = (planned.amount_overdue / 2).quantize(Decimal("0.01"))
    # By name, as service/updates.py calls it: temporalio types an async update method's result
    # as the coroutine it returns.
    await handle.execute_update(Update.PLAN, PlanInput(
        agent=agent, currency="CNY", installments=[
            Installment(amount=half, due_date=today + timedelta(days=10)),
            Installment(amount=planned.amount_overdue - half, due_date=today + timedelta(days=40)),
        ]), result_type=UpdateResult)
    # The plan's agent reaches visibility and PostgreSQL before the payment is sent, so both
    # stores see the plan and then the payment (the search attributes are upserted from the
    # live state after each record, and may run a batch ahead of PostgreSQL for a moment).
    await eventually(lambda: list_cases(client, agent=agent),
                     lambda rows: [(r.loan_id, r.state) for r in rows]
                     == [(planned.loan_id, "active")],
                     timeout=30)
    await eventually(lambda: list_cases_db(pool, agent=agent),
                     lambda rows: [r.loan_id for r in rows] == [planned.loan_id], timeout=30)
    await handle.signal(CollectionWorkflow.pay, PaymentInput(
        payment_id="full", amount=planned.amount_overdue, currency="CNY"))

    def ids(rows: list[CaseRow]) -> set[str]:
        return {r.loan_id for r in rows}

    async def both(expected: set[str], **filters: Any) -> list[CaseRow]:
        """Visibility and PostgreSQL agree on the filter, eventually."""
        rows = await eventually(lambda: list_cases(client, **filters),
                                lambda rows: ids(rows) == expected, timeout=30)
        db_rows = await eventually(lambda: list_cases_db(pool, **filters),
                                   lambda rows: ids(rows) == expected, timeout=30)
        assert {(r.loan_id, r.state, r.stage) for r in rows} == {
            (r.loan_id, r.state, r.stage) for r in db_rows}
        return rows

    in_range: dict[str, Any] = {"min_outstanding": base, "max_outstanding": base + 10_000}
    everyone = {ln.loan_id for ln in [*waiting, overdue]}
    rows = await both(everyone, **in_range)
    # The planned case is paid: balance 0, out of the range.
    rows = await both({ln.loan_id for ln in waiting}, stage="pre_due", **in_range)
    for r in rows:
        assert r.state == "active" and r.currency == "CNY" and r.days_past_due == -30
        assert r.policy_version == "default@2026.11.1"
    by_id = {r.loan_id: r for r in rows}
    # Whole units, rounded down, for visibility (the search attribute is an Int).
    assert by_id[waiting[1].loan_id].outstanding == Decimal(base + 2000)
    db_by_id = {r.loan_id: r for r in await list_cases_db(pool, stage="pre_due", **in_range)}
    assert db_by_id[waiting[1].loan_id].outstanding == Decimal(f"{base + 2000}.75")
    # Inclusive whole-unit bounds: base+2000.75 lies within [base+2000, base+2000].
    await both({waiting[1].loan_id}, min_outstanding=base + 2000, max_outstanding=base + 2000)
    await both({waiting[1].loan_id}, min_outstanding=base + 1001, max_outstanding=base + 2999)
    late = await both({overdue.loan_id}, stage="late", **in_range)
    assert late[0].days_past_due == 40
    await both({overdue.loan_id}, min_dpd=30, **in_range)
    await both(everyone - {overdue.loan_id}, max_dpd=0, **in_range)
    await both(everyone, policy_version="default", currency="CNY", **in_range)
    await both(set(), policy_version="default@1999.1", **in_range)
    # Agent and state: the planned case, paid.
    paid = await both({planned.loan_id}, agent=agent, state="paid")
    assert paid[0].outstanding == 0 and paid[0].agent == agent
    await both(set(), agent=agent, state="active")
    # Limits cut the answer.
    assert len(await list_cases(client, limit=2, **in_range)) == 2
    assert len(await list_cases_db(pool, limit=2, **in_range)) == 2


# --------------------------------------------------------------------------- history


async def test_history_of_a_continued_as_new_case(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, loan_id: str,
) -> None:
    client = ts_env.client
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2))
    handle = await start_case(client, loan, ts_worker.task_queue,
                              policy=pinned(loan, max_history_events=60))
    paid = Decimal("0")
    for n, (days, amount) in enumerate([(3, "100.00"), (6, "150.00"), (9, "200.00")], 1):
        await ts_env.sleep(timedelta(days=days))
        await handle.signal(CollectionWorkflow.pay, PaymentInput(
            payment_id=f"part-{n}", amount=Decimal(amount), currency="CNY"))
        paid += Decimal(amount)
    await ts_env.sleep(timedelta(days=2))
    status = await handle.query(CollectionWorkflow.status)
    assert status.run_count > 1, "the case should have continued as new by now"
    await handle.signal(CollectionWorkflow.pay, PaymentInput(
        payment_id="rest", amount=loan.amount_overdue - paid, currency="CNY"))
    result = await handle.result()
    assert result.state == "paid"
    runs = await case_history.run_count(client, loan_id)
    assert runs > 1

    entries = await case_history.history(client, pool, loan_id)
    times = [e.at for e in entries]
    assert times == sorted(times)
    kinds = [e.kind for e in entries if e.source in ("events", "temporal")]
    assert kinds[0] == "case_opened" and "case_closed" in kinds
    assert kinds.index("case_closed") > max(i for i, k in enumerate(kinds) if k == "payment")
    event_payments = [e for e in entries
                      if e.kind == "payment" and e.source in ("events", "temporal")]
    assert [e.detail["payment_id"] for e in event_payments] == \
        ["part-1", "part-2", "part-3", "rest"]
    payment_rows = [e for e in entries if e.source == "payments"]
    assert [e.detail["payment_id"] for e in payment_rows] == ["part-1", "part-2", "part-3", "rest"]
    assert sum(Decimal(e.detail["amount"]) for e in payment_rows) == loan.amount_overdue
    assert {"events", "contacts", "payments"} <= {e.source for e in entries}
    # Each domain event once: PostgreSQL has them all, so nothing comes from Temporal twice.
    keys = [(e.kind, e.summary, e.at) for e in entries if e.source in ("events", "temporal")]
    assert len(keys) == len(set(keys))
    pg_events = await pool.fetch(
        "SELECT kind, summary, occurred_at FROM events WHERE loan_id = $1", loan_id)
    assert len(pg_events) == len(keys)
    assert not [e for e in entries if e.source == "temporal"]

    # Without a worker's answer, the events come out of the event history of every run:
    # every run's events, the same set PostgreSQL holds.
    exists, from_history = await case_history._temporal_history(
        client, loan_id, use_query=False, query_timeout=1)
    assert exists
    history_keys = {(e.kind, e.summary, e.at) for e in from_history}
    assert history_keys == {(r["kind"], r["summary"], r["occurred_at"]) for r in pg_events}
    # Events written in the first run and in the last one are both there.
    assert {"case_opened", "case_closed"} <= {k for k, _, _ in history_keys}

    # PostgreSQL missing an event: it comes from Temporal, once, in its place.
    closing = await pool.fetchrow(
        "DELETE FROM events WHERE loan_id = $1 AND kind = 'case_closed'"
        " RETURNING summary, occurred_at",
        loan_id)
    for use_query in (True, False):
        merged = await case_history.history(client, pool, loan_id, use_query=use_query)
        closed = [e for e in merged if e.kind == "case_closed"]
        assert [(e.source, e.summary, e.at) for e in closed] == [
            ("temporal", closing["summary"], closing["occurred_at"])]
        assert [e.at for e in merged] == sorted(e.at for e in merged)

    # JSON for audits: ISO times, amounts as strings.
    doc = json.loads(json.dumps([e.to_json() for e in merged]))
    row = next(d for d in doc if d["source"] == "payments")
    assert isinstance(row["detail"]["amount"], str) and datetime.fromisoformat(row["at"]).tzinfo

    with pytest.raises(NotFound):
        await case_history.history(client, pool, f"NOPE{uuid.uuid4().hex[:8]}")


# ------------------------------------------------------------------ report: a book worked by hand

T0 = datetime(2024, 3, 1, tzinfo=UTC)
AS_OF = T0 + timedelta(days=45)  # 2024-04-15


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


# loan: (version, segment, placed, state, closed_at, stages [(from, to, at)],
#        payments [(amount, at)], promise events [(kind, at)], contacts [(decision, at)], opened_at)
KNOWN_BOOK: dict[str, dict[str, Any]] = {
    "A": dict(v="v1", seg="standard", placed="1000.00", state="paid", closed=days(10),
              stages=[(None, "pre_due", days(0)), ("pre_due", "early", days(3))],
              payments=[("400.00", days(5)), ("600.00", days(10))],
              promises=[("promise_kept", days(10))],
              contacts=[("sent", days(1)), ("sent", days(4)), ("deferred", days(4))]),
    "B": dict(v="v1", seg="standard", placed="2000.00", state="active", closed=None,
              stages=[(None, "early", days(0)), ("early", "middle", days(7)),
                      ("middle", "late", days(30))],
              payments=[("500.00", days(35)), ("999.00", days(60))],  # the second after AS_OF
              promises=[("promise_broken", days(12)), ("promise_broken", days(25)),
                        ("promise_kept", days(50))],  # after AS_OF
              contacts=[("sent", days(2)), ("sent", days(8)), ("sent", days(31)),
                        ("sent", days(55))]),
    "C": dict(v="v1", seg="standard", placed="500.00", state="written_off", closed=days(40),
              stages=[(None, "early", days(0)), ("early", "late", days(2)),  # skips middle
                      ("late", "legal", days(20)), ("legal", "written_off", days(40))],
              payments=[], promises=[], contacts=[("sent", days(1))]),
    "D": dict(v="v1", seg="small", placed="300.00", state="settled", closed=days(8),
              stages=[(None, "pre_due", days(0))],
              payments=[("180.00", days(8))],
              promises=[("promise_broken", days(4)), ("promise_kept", days(8))],
              contacts=[("sent", days(2)), ("failed", days(3))]),
    "E": dict(v="v2", seg="standard", placed="1500.00", state="active", closed=None,
              stages=[(None, "pre_due", days(0)), ("pre_due", "early", days(3))],
              payments=[], promises=[], contacts=[]),
    "F": dict(v="v2", seg="standard", placed="700.00", state="closed", closed=days(20),
              stages=[(None, "early", days(0)), ("early", "closed", days(20))],
              payments=[], promises=[], contacts=[("sent", days(1)), ("sent", days(2))]),
    "H": dict(v="v2", seg="standard", placed="800.00", state="paid", closed=days(60),  # after AS_OF
              stages=[(None, "early", days(0))],
              payments=[("800.00", days(60))], promises=[], contacts=[("sent", days(5))]),
    "G": dict(v="v2", seg="standard", placed="900.00", state="active", closed=None,
              opened=days(50),  # opened after AS_OF: not in the report
              stages=[(None, "early", days(50))], payments=[], promises=[], contacts=[]),
}


async def insert_known_book(pool: asyncpg.Pool, policy: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for name, c in KNOWN_BOOK.items():
            loan_id = f"{policy}-{name}"
            opened = c.get("opened", T0)
            paid = sum((Decimal(a) for a, _ in c["payments"]), Decimal("0"))
            stage = c["stages"][-1][1]
            await conn.execute(
                """INSERT INTO cases (loan_id, workflow_id, borrower_key, policy_name,
                       policy_version, segment, rule_pack, currency, amount_placed, outstanding,
                       paid_total, stage, state, days_past_due, due_date, opened_at, closed_at,
                       updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, 'cn', 'CNY', $7, $8, $9, $10, $11, 0, $12, $13,
                           $14, $15)""",
                loan_id, f"collection-{loan_id}", f"b:{loan_id}", policy, c["v"], c["seg"],
                Decimal(c["placed"]), max(Decimal(c["placed"]) - paid, Decimal("0")), paid, stage,
                c["state"], opened.date(), opened, c["closed"], c["closed"] or opened)
            for i, (frm, to, at) in enumerate(c["stages"]):
                await conn.execute(
                    "INSERT INTO stage_history"
                    " (idempotency_key, loan_id, from_stage, to_stage, occurred_at)"
                    " VALUES ($1, $2, $3, $4, $5)", f"{loan_id}/s{i}", loan_id, frm, to, at)
            for i, (amount, at) in enumerate(c["payments"]):
                await conn.execute(
                    "INSERT INTO payments (loan_id, payment_id, amount, currency, paid_at)"
                    " VALUES ($1, $2, $3, 'CNY', $4)", loan_id, f"p{i}", Decimal(amount), at)
            for i, (kind, at) in enumerate(c["promises"]):
                await conn.execute(
                    "INSERT INTO events (idempotency_key, loan_id, kind, summary, occurred_at)"
                    " VALUES ($1, $2, $3, $3, $4)", f"{loan_id}/e{i}", loan_id, kind, at)
            for i, (decision, at) in enumerate(c["contacts"]):
                await conn.execute(
                    """INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key,
                           channel, step_id, stage, decision, occurred_at)
                       VALUES ($1, $2, $3, $3, 'sms', 'step', 'early', $4, $5)""",
                    f"{loan_id}/c{i}", loan_id, f"b:{loan_id}", decision, at)


@pytest.fixture
async def known_book(pool: asyncpg.Pool) -> str:
    policy = f"test-report-{uuid.uuid4().hex[:8]}"
    await insert_known_book(pool, policy)
    return policy


def d(text: str) -> Decimal:
    return Decimal(text)


async def test_report_figures_match_a_book_worked_by_hand(
    pool: asyncpg.Pool, known_book: str, database_env: str,
) -> None:
    report = await portfolio_report(pool, as_of=AS_OF, policy_name=known_book)
    rows = {(r.policy_version, r.segment): r for r in report.rows}
    assert set(rows) == {("v1", "standard"), ("v1", "small"), ("v2", "standard")}

    # v1 standard: A (paid), B (active), C (written off).
    r = rows[("v1", "standard")]
    # 400+600 (A), 500 (B)
    assert (r.cases, r.placed, r.collected) == (3, d("3500.00"), d("1500.00"))
    assert r.recovery_rate == d("0.4286")  # 1500 / 3500
    assert r.cure_rate == d("0.3333")  # A / 3
    assert r.reached == {"pre_due": 1, "early": 3, "middle": 1, "late": 2, "legal": 1,
                         "written_off": 1}
    assert r.roll_rates == {
        "pre_due->early": d("1.0000"),  # A
        "early->middle": d("0.6667"),  # B to middle, C on to late; A cured
        "middle->late": d("1.0000"),  # B
        "late->legal": d("0.5000"),  # C; B still in late
        "legal->written_off": d("1.0000"),  # C
    }
    assert (r.promises_kept, r.promises_broken) == (1, 2)  # B's kept promise comes after AS_OF
    assert r.promise_kept_rate == d("0.3333")
    # 2 (A) + 3 (B) + 1 (C), 1 cure
    assert r.contacts_sent == 6 and r.contacts_per_cure == d("6.0000")
    assert r.by_state == {"active": 1, "paid": 1, "written_off": 1}

    # v1 small: D, settled at 60%.
    r = rows[("v1", "small")]
    assert (r.cases, r.placed, r.collected) == (1, d("300.00"), d("180.00"))
    assert (r.recovery_rate, r.cure_rate) == (d("0.6000"), d("1.0000"))
    assert r.roll_rates == {"pre_due->early": d("0.0000"), "early->middle": None,
                            "middle->late": None, "late->legal": None, "legal->written_off": None}
    # failed: not made
    assert r.promise_kept_rate == d("0.5000") and r.contacts_per_cure == d("1.0000")
    assert r.by_state == {"settled": 1}

    # v2 standard: E (active), F (closed: bankruptcy), H (paid only after AS_OF); G opens later.
    r = rows[("v2", "standard")]
    assert (r.cases, r.placed, r.collected) == (3, d("3000.00"), d("0"))
    assert (r.recovery_rate, r.cure_rate) == (d("0.0000"), d("0.0000"))
    assert r.roll_rates["pre_due->early"] == d("1.0000")  # E
    assert r.roll_rates["early->middle"] == d("0.0000")  # E, F (to closed: not worse), H
    assert r.promise_kept_rate is None and r.contacts_per_cure is None  # no promise, no cure
    assert r.contacts_sent == 3
    assert r.by_state == {"active": 2, "closed": 1}

    # Per policy version, over segments.
    v1 = next(v for v in report.by_policy_version() if v.policy_version == "v1")
    assert (v1.cases, v1.placed, v1.collected, v1.cured) == (4, d("3800.00"), d("1680.00"), 2)
    assert v1.recovery_rate == d("0.4421")  # 1680 / 3800

    # The monthly series of v1: March and April 2024.
    series = [p for p in report.series if p.policy_version == "v1"]
    assert [p.month for p in series] == [date(2024, 3, 1), date(2024, 4, 1)]
    march, april = series
    assert (march.placed, march.collected, march.recovery_rate) == \
        (d("3800.00"), d("1180.00"), d("0.3105"))
    assert (april.placed, april.collected, april.recovery_rate) == \
        (d("0"), d("500.00"), d("0.4421"))
    assert march.in_stage == {"pre_due": 2, "early": 3, "middle": 1, "late": 2, "legal": 1}
    assert march.roll_rates == {
        "pre_due->early": d("0.5000"),  # A rolled, D settled
        "early->middle": d("0.6667"),  # B, C rolled; A cured
        "middle->late": d("1.0000"),  # B on March 31
        "late->legal": d("0.5000"),  # C on March 21; B entered late on March 31
        "legal->written_off": d("0.0000"),  # C is written off in April
    }
    assert april.in_stage == {"pre_due": 0, "early": 0, "middle": 0, "late": 1, "legal": 1}
    assert april.roll_rates["late->legal"] == d("0.0000")
    assert april.roll_rates["legal->written_off"] == d("1.0000")
    assert april.roll_rates["pre_due->early"] is None

    # Later, H is paid and B's second payment is in.
    later = await portfolio_report(pool, as_of=days(70), policy_name=known_book)
    v2 = next(v for v in later.by_policy_version() if v.policy_version == "v2")
    assert (v2.cases, v2.collected, v2.cured) == (4, d("800.00"), 1)  # G opened by then

    # The CLI gives the same figures as JSON (in a thread: it runs its own event loop).
    doc = await report_cli_json(["--policy", known_book, "--as-of", AS_OF.isoformat()])
    row = next(x for x in doc["rows"] if (x["policy_version"], x["segment"]) == ("v1", "standard"))
    assert (row["collected"], row["recovery_rate"], row["cure_rate"]) == \
        ("1500.00", "0.4286", "0.3333")
    assert row["roll_rates"]["early->middle"] == "0.6667"
    assert {p["month"] for p in doc["series"]} == {"2024-03-01", "2024-04-01"}


@pytest.fixture
def database_env(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    return pg_dsn


async def report_cli_json(args: list[str]) -> dict[str, Any]:
    result = await asyncio.to_thread(CliRunner().invoke, cli_app(), ["report", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- the synthetic book


async def test_seed_book_report_and_chart(
    pool: asyncpg.Pool, tmp_path: Path, database_env: str,
) -> None:
    first = [r.cases[:3] for r in generate(50, seed=7, chunk=20)]
    assert first == [r.cases[:3] for r in generate(50, seed=7, chunk=20)]  # deterministic
    try:
        await seed_book(pool, 2000, seed=3)
        await seed_book(pool, 2000, seed=3)  # replaces, never adds
        counts = await pool.fetchrow(
            "SELECT count(*) AS n, sum(amount_placed) AS placed FROM cases"
            " WHERE starts_with(loan_id, $1)",
            BOOK_PREFIX)
        assert counts["n"] == 2000
        report = await portfolio_report(pool, policy_name="book")
        assert {r.policy_name for r in report.rows} == {"book"}
        assert {r.policy_version for r in report.rows} == {"2025.1", "2025.2", "2025.3"}
        assert sum(r.cases for r in report.rows) == 2000
        assert sum(r.placed for r in report.rows) == counts["placed"]
        collected = await pool.fetchval(
            "SELECT sum(amount) FROM payments WHERE starts_with(loan_id, $1)", BOOK_PREFIX)
        assert sum(r.collected for r in report.rows) == collected
        for r in report.by_policy_version():
            assert r.recovery_rate is not None and 0 < r.recovery_rate < 1
            assert r.cure_rate is not None and 0 < r.cure_rate < 1
            assert all(v is not None and 0 <= v <= 1 for v in r.roll_rates.values())
            assert r.promise_kept_rate is not None and r.contacts_per_cure is not None
        assert report.series and all(p.recovery_rate is None or p.recovery_rate <= 1
                                     for p in report.series)

        # Listing the book from PostgreSQL: largest balance first, filters applied.
        rows = await list_cases_db(pool, policy_version="book@2025.1", state="active",
                                      min_dpd=30, limit=20)
        assert rows and all(r.policy_version == "book@2025.1" and r.state == "active"
                            and (r.days_past_due or 0) >= 30 for r in rows)
        balances = [r.outstanding for r in rows if r.outstanding is not None]
        assert len(balances) == len(rows)
        assert balances == sorted(balances, reverse=True)
        result = await asyncio.to_thread(CliRunner().invoke, cli_app(), [
            "list", "--source", "db", "--policy-version", "book@2025.1", "--state", "active",
            "--min-dpd", "30", "--limit", "20", "--json"])
        assert result.exit_code == 0, result.output
        assert [x["loan_id"] for x in json.loads(result.stdout)] == [r.loan_id for r in rows]
        assert "temporal workflow list --query" in result.stderr

        path = render_chart(report, tmp_path / "report.png")
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000

        result = await asyncio.to_thread(CliRunner().invoke, cli_app(), [
            "report", "--policy", "book", "--chart", str(tmp_path / "cli.png")])
        assert result.exit_code == 0, result.output
        assert "book@2025.2" in result.stdout
        assert (tmp_path / "cli.png").read_bytes().startswith(PNG_SIGNATURE)
    finally:
        await clear_book(pool)
    assert not await pool.fetchval(
        "SELECT count(*) FROM cases WHERE starts_with(loan_id, $1)", BOOK_PREFIX)


async def test_cli_rejects_bad_filters(database_env: str) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, cli_app(), [
        "list", "--source", "db", "--agent", "x' OR '1'='1"])
    assert result.exit_code == 2 and "agent" in result.stderr
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app(), ["report", "--as-of", "2024-01-01T00:00"])
    assert result.exit_code == 2


async def test_report_counts_breaches_by_rule_and_unapplied_money_by_currency(
    pool: asyncpg.Pool, known_book: str, database_env: str,
) -> None:
    """Read from their tables, as of the report's time and for its policy; the other figures do
    not move (a breach is no contact 'sent')."""
    before = (await portfolio_report(pool, as_of=AS_OF, policy_name=known_book)).to_json()
    assert (before["breaches"], before["unapplied_payments"]) == ({"total": 0, "by_rule": {}}, [])
    breaches = [("A", "cn.cba.quiet_hours_22_08", days(2)), ("B", "cn.cba.quiet_hours_22_08",
                                                               days(9)),
                ("B", "cn.nifa.connected_calls_per_day", days(20)),
                ("C", "cn.cba.quiet_hours_22_08", days(50))]  # after AS_OF
    unapplied = [("A", "u1", "100.00", "USD", days(3), "unapplied"),
                 ("B", "u2", "50.50", "USD", days(4), "unapplied"),
                 ("B", "u3", "-5.00", "CNY", days(5), "unapplied"),
                 ("C", "u4", "70.00", "EUR", days(6), "resolved"),  # applied later: not counted
                 ("D", "u5", "9.00", "EUR", days(55), "unapplied")]  # after AS_OF
    async with pool.acquire() as conn:
        for i, (case, rule, at) in enumerate(breaches):
            loan_id = f"{known_book}-{case}"
            await conn.execute(
                """INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key,
                       channel, step_id, stage, decision, rule, occurred_at)
                   VALUES ($1, $2, $3, $3, 'call', 'call', 'early', 'breach', $4, $5)""",
                f"{loan_id}/b{i}", loan_id, f"b:{loan_id}", rule, at)
        for case, payment_id, amount, currency, at, status in unapplied:
            await conn.execute(
                """INSERT INTO unapplied_payments (loan_id, payment_id, amount, currency,
                       received_at, reason, status) VALUES ($1, $2, $3, $4, $5, 'test', $6)""",
                f"{known_book}-{case}", payment_id, Decimal(amount), currency, at, status)
    report = await portfolio_report(pool, as_of=AS_OF, policy_name=known_book)
    assert report.breaches == {"cn.cba.quiet_hours_22_08": 2, "cn.nifa.connected_calls_per_day": 1}
    assert [(u.currency, u.count, u.amount) for u in report.unapplied] == [
        ("CNY", 1, d("-5.00")), ("USD", 2, d("150.50"))]
    doc = report.to_json()
    assert {k: v for k, v in doc.items() if k not in ("breaches", "unapplied_payments")} == {
        k: v for k, v in before.items() if k not in ("breaches", "unapplied_payments")}
    assert doc["breaches"] == {"total": 3, "by_rule": {"cn.cba.quiet_hours_22_08": 2,
                                                       "cn.nifa.connected_calls_per_day": 1}}
    assert doc["unapplied_payments"] == [{"currency": "CNY", "count": 1, "amount": "-5.00"},
                                         {"currency": "USD", "count": 2, "amount": "150.50"}]
    scanned = await portfolio_report(pool, as_of=AS_OF, policy_name=known_book, rollup=False)
    assert scanned.to_json() == doc
    later = await portfolio_report(pool, as_of=days(70), policy_name=known_book)
    assert later.breach_total == 4 and {u.currency: u.count for u in later.unapplied} == {
        "CNY": 1, "EUR": 1, "USD": 2}
    elsewhere = await portfolio_report(pool, as_of=days(70), policy_name="no-such-policy")
    assert (elsewhere.breaches, elsewhere.unapplied) == ({}, [])
    # The CLI prints both tables.
    result = await asyncio.to_thread(CliRunner().invoke, cli_app(), [
        "report", "--policy", known_book, "--as-of", AS_OF.isoformat()], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Compliance breaches: 3" in result.stdout
    assert "cn.nifa.connected_calls_per_day" in result.stdout
    assert "Unapplied payments" in result.stdout and "150.50" in result.stdout
