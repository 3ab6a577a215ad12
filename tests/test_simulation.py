"""Simulated cases: the real workflow and policy with nothing sent or written.

Each test runs a loan for real (PostgreSQL, the emulator) and the same loan simulated, on the
time-skipping server, and compares their timelines: a simulation is only worth running if it
says what the real case would do, and it must leave no trace in the book or with the providers.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.case_io import CollectionInput
from contracts.messages import CaseResult, CaseState, LoanInput, Stage, TimelineEvent
from contracts.names import STAGE, WORKFLOW_TYPE, workflow_id_for
from contracts.policy import ResolvedPolicy, Step
from infra.emulator import ProviderEmulator
from policies import compliance
from tests.helpers import make_loan, pinned, today_of
from workflows.collection_workflow import CollectionWorkflow

TABLES = ["cases", "events", "contacts", "tasks", "legal_actions", "payments", "stage_history"]
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


async def _run(env: WorkflowEnvironment, worker: Worker, loan: LoanInput, *, simulate: bool,
               policy: ResolvedPolicy | None = None) -> tuple[WorkflowHandle, Any]:
    wid = f"simulation-{loan.loan_id}" if simulate else workflow_id_for(loan.loan_id)
    # By name: the run method takes a RawValue (it checks its input), so typed by the method the
    # argument would not match; the result type is the one the method returns.
    handle = await env.client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan, policy=policy, simulate=simulate),
        id=wid, task_queue=worker.task_queue, result_type=CaseResult)
    return handle, await asyncio.wait_for(handle.result(), timeout=60)


def _shape(
    loan: LoanInput, timeline: list[TimelineEvent],
) -> list[tuple[str, str, str | None, int | None]]:
    """A timeline as minutes from the due date, dates in summaries masked: comparable across loans
    (the activities of the real case take a few milliseconds of server time)."""
    anchor = compliance.step_instant(loan.due_date, 0, 0, loan.timezone)
    return [(e.kind, DATE.sub("<date>", e.summary).replace(loan.loan_id, "<loan>"), e.rule,
             None if e.kind == "case_opened" else round((e.at - anchor).total_seconds() / 60))
            for e in timeline]


async def _no_trace(pool: asyncpg.Pool, emulator: ProviderEmulator, loan: LoanInput) -> None:
    for table in TABLES:
        count = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE loan_id = $1", loan.loan_id)
        assert count == 0, table
    assert [m for m in emulator.messages() if m["to"] in (loan.phone, loan.email)] == []


async def _today(env: WorkflowEnvironment) -> Any:
    return today_of(await env.get_current_time())


async def test_simulated_default_ladder_matches_the_real_case_and_leaves_no_trace(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, emulator: ProviderEmulator,
    loan_id: str,
) -> None:
    real = make_loan(loan_id, due=await _today(ts_env) + timedelta(days=5),
                     amount_overdue=Decimal("8000.00"))
    handle, real_result = await _run(ts_env, ts_worker, real, simulate=False)
    real_timeline = await handle.query(CollectionWorkflow.timeline)
    assert real_result.timeline is None  # a real case's timeline is queried, not returned

    sim = make_loan(f"{loan_id}S", due=await _today(ts_env) + timedelta(days=5),
                    amount_overdue=Decimal("8000.00"))
    sim_handle, result = await _run(ts_env, ts_worker, sim, simulate=True)

    assert (result.state, result.stage) == (CaseState.WRITTEN_OFF, Stage.WRITTEN_OFF)
    assert result.outstanding == real_result.outstanding == Decimal("8000.00")
    assert result.timeline is not None
    assert result.timeline[0].summary.startswith("simulated case opened under policy default")
    expected = _shape(real, real_timeline)
    got = _shape(sim, result.timeline)
    assert [e[0] for e in got] == [e[0] for e in expected]
    assert got[1:] == expected[1:]
    kinds = [e.kind for e in result.timeline]
    assert kinds.count("contact_sent") == 13 and kinds.count("task_created") == 7
    assert kinds.count("legal_action") == 2 and kinds[-1] == "case_closed"

    await _no_trace(pool, emulator, sim)
    described = await sim_handle.describe()
    assert STAGE.name not in described.search_attributes  # never listed as a real case


async def test_simulated_caps_defer_like_the_database_does(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, emulator: ProviderEmulator,
    loan_id: str,
) -> None:
    """Seven SMS steps in one day: the CBA cap of 6 unanswered per channel defers the seventh."""
    steps = [Step(id=f"sms-{h}", day=1, hour=h, stage=Stage.EARLY, kind="message", channels=["sms"],
                  template="early_reminder") for h in range(9, 16)]
    steps.append(Step(id="write-off", day=4, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                      template="write_off_notice", notice="collection_ending"))

    async def run(loan: LoanInput, simulate: bool) -> list[TimelineEvent]:
        policy = pinned(loan).model_copy(update={"steps": steps})
        handle, result = await _run(ts_env, ts_worker, loan, simulate=simulate, policy=policy)
        assert result.state == CaseState.WRITTEN_OFF
        return result.timeline if simulate else await handle.query(CollectionWorkflow.timeline)

    real = make_loan(loan_id, due=await _today(ts_env) + timedelta(days=1))
    real_timeline = await run(real, False)
    sim = make_loan(f"{loan_id}S", due=await _today(ts_env) + timedelta(days=1))
    sim_timeline = await run(sim, True)

    assert _shape(sim, sim_timeline)[1:] == _shape(real, real_timeline)[1:]
    deferred = [e for e in sim_timeline if e.kind == "contact_deferred"]
    assert [e.rule for e in deferred] == ["cn.cba.unanswered_per_channel_per_day"]
    assert deferred[0].detail["step"] == "sms-15" and "08:00 local" in deferred[0].summary
    sent = [e.at for e in sim_timeline if e.kind == "contact_sent" and e.detail["channel"] == "sms"]
    day_one = compliance.local(sent[0], sim.timezone).date()
    assert [compliance.local(t, sim.timezone).date() for t in sent] == \
        [day_one] * 6 + [day_one + timedelta(days=1)]
    await _no_trace(pool, emulator, sim)


async def test_agent_outcomes_drive_a_simulated_case(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, emulator: ProviderEmulator,
    loan_id: str,
) -> None:
    """A what-if: the borrower pays in full on day 10. Handlers work on a simulation as on a
    case."""
    from contracts.messages import PaymentInput

    loan = make_loan(loan_id, due=await _today(ts_env) + timedelta(days=1))
    handle = await ts_env.client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan, simulate=True),
        id=f"simulation-{loan.loan_id}", task_queue=ts_worker.task_queue,
        result_type=CaseResult)
    now = await ts_env.get_current_time()
    await ts_env.sleep(compliance.step_instant(loan.due_date, 10, 12, loan.timezone) - now)
    status = await handle.query(CollectionWorkflow.status)
    assert status.stage == Stage.MIDDLE
    await handle.signal(CollectionWorkflow.pay, PaymentInput(
        payment_id="P1", amount=Decimal("1400.00"), currency="CNY"))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.PAID and result.paid_total == Decimal("1400.00")
    assert result.timeline is not None
    receipts = [e for e in result.timeline if e.kind == "contact_sent"
                and e.detail.get("step", "").startswith("payment_receipt")]
    assert receipts, [(e.kind, e.summary) for e in result.timeline[-6:]]
    await _no_trace(pool, emulator, loan)


# ------------------------------------------------------------------- policy simulate (the CLI)

def _simulate_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    import starter

    # A closed port and no database: the command must need neither.
    env = {"COLUMNS": "200", "TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None,
           "COLLECTIONS_ENCRYPTION_KEYS": None}
    return CliRunner().invoke(starter.app, ["policy", "simulate", *args], env=env)


def _flags(due: Any, **overrides: str) -> list[str]:
    flags = {"--loan-id": "S1", "--name": "Li Lei", "--phone": "+8613800138000",
             "--email": "li@example.com", "--locale": "en", "--timezone": "Asia/Shanghai",
             "--currency": "CNY", "--amount": "8000.00", "--due-date": due.isoformat()}
    flags.update(overrides)
    return [part for pair in flags.items() for part in pair]


async def test_policy_simulate_runs_the_whole_case_without_a_cluster(tmp_path: Any) -> None:
    import json
    from datetime import date

    due = date.today() + timedelta(days=5)
    # In a thread: the command runs its own event loop and its own time-skipping server.
    result = await asyncio.to_thread(_simulate_cli, *_flags(due), "--json")
    assert result.exit_code == 0, result.output
    case = json.loads(result.stdout)
    assert (case["state"], case["outstanding"], case["currency"]) == \
        ("written_off", "8000.00", "CNY")
    kinds = [e["kind"] for e in case["timeline"]]
    assert kinds.count("contact_sent") == 13 and kinds.count("task_created") == 7
    assert case["timeline"][-1]["summary"] == \
        "case closed: written_off (written off at the end of the ladder)"

    table = await asyncio.to_thread(_simulate_cli, *_flags(due, **{"--policy": "demo"}))
    assert table.exit_code == 0, table.output
    assert "simulated case opened under policy demo" in table.stdout
    assert "loan S1: written_off" in table.stdout


async def test_policy_simulate_refuses_bad_input() -> None:
    from datetime import date

    due = date.today() + timedelta(days=5)
    unknown = await asyncio.to_thread(_simulate_cli, *_flags(due, **{"--policy": "nope"}))
    assert unknown.exit_code == 2
    assert unknown.output.startswith("--policy: is not a known policy (known: default, ")
    assert "nope" not in unknown.output  # a value typed on the command line is never repeated
    bad = await asyncio.to_thread(_simulate_cli, *_flags(due, **{"--amount": "12.345"}))
    assert bad.exit_code == 2 and "amount" in bad.output
    mixed = await asyncio.to_thread(_simulate_cli, "--file", "loans.csv", "--amount", "5.00")
    assert mixed.exit_code == 2 and "drop --amount" in mixed.output


async def test_simulated_caps_survive_continue_as_new(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, emulator: ProviderEmulator,
    loan_id: str,
) -> None:
    """A short history limit: the case continues as new between the SMS steps, and the attempts
    it carries still defer the seventh SMS of the day."""
    steps = [Step(id=f"sms-{h}", day=1, hour=h, stage=Stage.EARLY, kind="message", channels=["sms"],
                  template="early_reminder") for h in range(9, 16)]
    steps.append(Step(id="write-off", day=4, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                      template="write_off_notice", notice="collection_ending"))
    loan = make_loan(loan_id, due=await _today(ts_env) + timedelta(days=1))
    policy = pinned(loan, max_history_events=20).model_copy(update={"steps": steps})
    handle, result = await _run(ts_env, ts_worker, loan, simulate=True, policy=policy)
    assert result.state == CaseState.WRITTEN_OFF
    assert (await handle.query(CollectionWorkflow.status)).run_count >= 3
    deferred = [e for e in result.timeline if e.kind == "contact_deferred"]
    assert [(e.detail["step"], e.rule) for e in deferred] == \
        [("sms-15", "cn.cba.unanswered_per_channel_per_day")]
    # 7 SMS and the write-off e-mail
    assert [e.kind for e in result.timeline].count("contact_sent") == 8
    await _no_trace(pool, emulator, loan)
