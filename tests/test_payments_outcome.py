"""Issue 14 through the service and the CLI: a payment's outcome (applied, duplicate, unapplied
and why), breaches and unapplied money in `report`, `status` and `history`, the agents' queue with
the times a task may be worked, `outcome --at`, and `list --state failed` for a bad start.

The dev server (visibility) runs the payment and bad-start tests; the time-skipping server the
ones that need the borrower's clock at 23:30 (the `cn` pack: 08:00-22:00).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

import starter
from activities.wiring import Providers
from cli.exit_codes import EXIT_CODES
from contracts.messages import HoldInput, PaymentInput, PaymentStatus, Stage
from contracts.names import WORKFLOW_TYPE, workflow_id_for
from contracts.policy import Step
from infra.codec import data_converter
from infra.emulator import ProviderEmulator
from infra.temporal_server import start_test_server
from service import cases as case_service
from service import history as case_history
from service import tasks as work_queue
from service.errors import ErrorKind, Refused
from service.report import portfolio_report
from tests.helpers import (
    Case,
    Stack,
    eventually,
    make_loan,
    new_loan,
    pinned,
    shut_down_after,
    start_case,
    utc_at,
)
from worker import running_worker
from workflows.collection_workflow import CollectionWorkflow

DEV_QUEUE = "dev-collections"
QUIET_HOURS = "cn.cba.quiet_hours_22_08"


def cli(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(starter.app, list(args), env={"COLUMNS": "200", **env})


def env_for(client: Client, tmp_path: Path, dsn: str, queue: str) -> dict[str, str | None]:
    # An empty state folder: no dev key file, so no codec, like the session's servers.
    return {"TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": client.namespace, "STATE_DIR": str(tmp_path),
            "COLLECTIONS_ENCRYPTION_KEYS": None, "TASK_QUEUE": queue, "DATABASE_URL": dsn}


@pytest.fixture
async def dev_cases(dev_env: WorkflowEnvironment, dev_worker: Worker) -> AsyncIterator[list[str]]:
    """Loan ids a test opened on the dev server; each is terminated afterwards."""
    started: list[str] = []
    yield started
    for loan_id in started:
        with contextlib.suppress(RPCError):  # already closed
            await dev_env.client.get_workflow_handle(workflow_id_for(loan_id)).terminate("over")


# ------------------------------------------------------------------------------- 1. pay


async def test_pay_answers_applied_duplicate_or_unapplied(
    dev_env: WorkflowEnvironment, dev_cases: list[str], pool: asyncpg.Pool, pg_dsn: str,
    loan_id: str, tmp_path: Path,
) -> None:
    env = env_for(dev_env.client, tmp_path, pg_dsn, DEV_QUEUE)

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(cli, env, *args)

    dev_cases.append(loan_id)
    due = datetime.now(UTC).date() + timedelta(days=10)
    await case_service.start_loan(dev_env.client, make_loan(loan_id, due), task_queue=DEV_QUEUE)

    wrong = await run("pay", loan_id, "--amount", "100.00", "--currency", "USD",
                      "--payment-id", "p1")
    assert wrong.exit_code == EXIT_CODES[ErrorKind.REFUSED] == 1, wrong.output
    assert wrong.stderr.strip() == (
        "payment p1 not applied: currency USD differs from the loan's CNY; kept as unapplied "
        "(outstanding 1200.00 CNY)")
    row = await eventually(lambda: pool.fetchrow(
        "SELECT amount, currency, reason, status FROM unapplied_payments "
        "WHERE loan_id = $1 AND payment_id = 'p1'", loan_id), lambda r: r is not None)
    assert (row["amount"], row["currency"], row["status"]) == (Decimal("100.00"), "USD",
                                                              "unapplied")
    assert row["reason"] == "currency USD differs from the loan's CNY"

    again = await run("pay", loan_id, "--amount", "100.00", "--currency", "USD",
                      "--payment-id", "p1")
    assert again.exit_code == 0, again.output
    assert "payment p1 was already recorded as unapplied" in again.stdout

    good = await run("pay", loan_id, "--amount", "200.00", "--currency", "CNY",
                     "--payment-id", "p2")
    assert good.exit_code == 0, good.output
    assert good.stdout.splitlines() == ["payment p2 of 200.00 CNY applied; outstanding 1000.00",
                                        "outstanding: 1000.00 CNY"]
    repeat = await case_service.pay(dev_env.client, loan_id,
                                    PaymentInput("p2", Decimal("200.00"), "CNY"))
    assert (repeat.status, repeat.outstanding) == (PaymentStatus.DUPLICATE, Decimal("1000.00"))
    # The money the case holds unapplied shows in status, panel and JSON.
    shown = await run("status", loan_id, "--json")
    doc = json.loads(shown.stdout)
    assert (doc["unapplied_payments"], doc["breaches"], doc["paid_total"]) == (1, 0, "200.00")
    panel = await run("status", loan_id)
    assert "1 payment(s) received but not applied" in panel.stdout
    # A malformed payment never reaches the case: the validator refuses it.
    with pytest.raises(Refused):
        await case_service.pay(dev_env.client, loan_id,
                               PaymentInput("p3", Decimal("1.00"), "dollars"))


# ------------------------------------------------------------------- 4. a failed start is listed


async def test_list_state_failed_shows_a_malformed_start(
    dev_env: WorkflowEnvironment, dev_worker: Worker, pg_dsn: str, loan_id: str, tmp_path: Path,
) -> None:
    """Started as plain JSON (the Temporal CLI, a Java client) with a time zone that does not
    exist: the case fails at once, and `list --state failed` finds it, naming the field."""
    raw = {"loan": {"loan_id": loan_id, "borrower_name": "Zhang Wei", "phone": "+8613812345678",
                    "email": "zhang.wei@example.com", "locale": "zh-CN",
                    "timezone": "Mars/Olympus", "currency": "CNY", "amount_overdue": "1200.00",
                    "due_date": datetime.now(UTC).date().isoformat()}}
    handle = await dev_env.client.start_workflow(WORKFLOW_TYPE, raw, id=workflow_id_for(loan_id),
                                                 task_queue=DEV_QUEUE)
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout=20)
    env = env_for(dev_env.client, tmp_path, pg_dsn, DEV_QUEUE)

    async def listed() -> list[dict[str, Any]]:
        result = await asyncio.to_thread(cli, env, "list", "--state", "failed", "--json")
        assert result.exit_code == 0, result.output
        return [r for r in json.loads(result.stdout) if r["loan_id"] == loan_id]

    (row,) = await eventually(listed, lambda rows: len(rows) == 1)
    assert row["state"] == "failed" and row["stage"] is None
    assert row["failure"].startswith("loan.timezone: "), row["failure"]
    table = await asyncio.to_thread(cli, env, "list", "--state", "failed")
    assert f"loan {loan_id}: start failed: loan.timezone: " in table.stdout
    for personal in ("Zhang", "8613812345678", "zhang.wei", "Mars/Olympus"):
        assert personal not in table.stdout + json.dumps(row)


# ------------------------------------------------ 2, 3. breaches, the queue and `outcome --at`


@pytest.fixture(scope="module")
async def own_ts_env() -> AsyncIterator[WorkflowEnvironment]:
    # A time-skipping server of this module's own, so its clock starts today: the CLI bounds
    # dates to ten years around today, and the session's server has skipped decades by now.
    async with shut_down_after(await start_test_server(data_converter=data_converter(None))) as env:
        yield env


@pytest.fixture(scope="module")
async def own_ts_worker(own_ts_env: WorkflowEnvironment, pool: asyncpg.Pool,
                        providers: Providers) -> AsyncIterator[Worker]:
    async with running_worker(own_ts_env.client, pool, providers,
                              task_queue="ts-payments-outcome") as w:
        yield w


@pytest.fixture
def stack(own_ts_env: WorkflowEnvironment, own_ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(own_ts_env, own_ts_worker.task_queue, pool, emulator)


def _call(day: int, step_id: str = "call") -> Step:
    return Step(id=step_id, day=day, hour=11, stage=Stage.EARLY, kind="call")


def _write_off(day: int) -> Step:
    return Step(id="write-off", day=day, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                template="write_off_notice", notice="collection_ending")


async def _open(stack: Stack, loan_id: str, steps: list[Step]) -> Case:
    loan, now, today = await new_loan(stack, loan_id, 0, 9)
    policy = pinned(loan).model_copy(update={"steps": steps, "ladder_name": "test"})
    handle = await start_case(stack.env.client, loan, stack.task_queue, policy)
    return Case(stack, loan, handle, now, today)


async def _open_task(case: Case, dsn: str) -> work_queue.TaskRow:
    rows = await eventually(lambda: work_queue.open_tasks(dsn, kind="call", limit=1000),
                            lambda rs: any(r.loan_id == case.loan.loan_id for r in rs))
    return next(r for r in rows if r.loan_id == case.loan.loan_id)


async def _breaches(pool: asyncpg.Pool, as_of: datetime) -> int:
    return (await portfolio_report(pool, as_of=as_of)).breaches.get(QUIET_HOURS, 0)


async def test_a_late_call_is_a_breach_that_report_status_and_history_show(
    stack: Stack, pg_dsn: str, loan_id: str, tmp_path: Path,
) -> None:
    case = await _open(stack, loan_id, [_call(1), _write_off(6)])
    env = env_for(stack.env.client, tmp_path, pg_dsn, stack.task_queue)

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(cli, env, *args)

    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 11) + timedelta(minutes=5))
    task = await _open_task(case, pg_dsn)
    # The queue says when the task may be worked: the window in the borrower's zone, the next
    # allowed period (open now, until 22:00 local), the caps left today, the deadline.
    assert (task.window, task.rule_pack) == ("08:00-22:00 Asia/Shanghai", "cn")
    assert task.caps_left == {"cn.nifa.connected_calls_per_day": 2,
                              "cn.cba.unanswered_per_channel_per_day": 5}
    queue = await run("tasks", "--kind", "call", "--limit", "1000", "--json")
    assert queue.exit_code == 0, queue.output
    (shown,) = [r for r in json.loads(queue.stdout) if r["loan_id"] == loan_id]
    assert (shown["window_start"], shown["window_end"], shown["timezone"]) == (
        "08:00", "22:00", "Asia/Shanghai")
    assert shown["caps_left"] == task.caps_left and shown["due_by"] and shown["work_windows"]
    table = await run("tasks", "--kind", "call", "--limit", "1000")
    line = next(x for x in table.stdout.splitlines() if loan_id in x)
    assert "08:00-22:00 Asia/Shanghai" in line and "11:00-22:00" in line  # the period, local
    assert "nifa.connected_calls_per_day 2" in table.stdout

    # The agent rang at 23:30 local and reports it at 23:45.
    now = utc_at(day, 23) + timedelta(minutes=45)
    before = await _breaches(case.pool, now + timedelta(hours=1))
    await case.sleep_until(now)
    rang = (utc_at(day, 23) + timedelta(minutes=30)).astimezone(ZoneInfo("Asia/Shanghai"))
    assert rang.isoformat().endswith("23:30:00+08:00")
    told = await run("outcome", loan_id, "--task-key", task.task_key, "--outcome", "reached",
                     "--agent", "a7", "--at", rang.isoformat())
    assert told.exit_code == 0, told.output
    assert "call outcome recorded: reached" in told.stdout
    await case.wait_events("compliance_breach")
    # `report` counts it, by the rule broken, in the tables and in --json.
    as_of = (now + timedelta(hours=1)).isoformat()
    await eventually(lambda: _breaches(case.pool, now + timedelta(hours=1)),
                     lambda n: n == before + 1)
    doc = json.loads((await run("report", "--json", "--as-of", as_of)).stdout)
    assert doc["breaches"]["by_rule"][QUIET_HOURS] == before + 1
    assert doc["breaches"]["total"] >= before + 1
    printed = await run("report", "--as-of", as_of)
    assert "Compliance breaches" in printed.stdout and QUIET_HOURS in printed.stdout
    # The case's status carries it, and its history has the breach with its rule.
    status = json.loads((await run("status", loan_id, "--json")).stdout)
    assert status["breaches"] == 1
    assert "1 agent call(s) or visit(s) outside the cn window" in (await run(
        "status", loan_id)).stdout
    entries = await case_history.history(stack.env.client, case.pool, loan_id)
    breach = [e for e in entries if e.kind == "compliance_breach"]
    assert breach and {e.rule for e in breach} == {QUIET_HOURS}
    assert [e.rule for e in entries if e.kind == "task_done"] == [QUIET_HOURS]
    # Done: out of the queue.
    assert loan_id not in {r.loan_id for r in await work_queue.open_tasks(pg_dsn, limit=1000)}
    await case.finish()


async def test_a_withdrawn_task_leaves_the_queue_and_its_outcome_is_refused(
    stack: Stack, pg_dsn: str, loan_id: str, tmp_path: Path,
) -> None:
    case = await _open(stack, loan_id, [_call(1), _write_off(40)])
    env = env_for(stack.env.client, tmp_path, pg_dsn, stack.task_queue)
    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 12))
    task = await _open_task(case, pg_dsn)
    await case.update(CollectionWorkflow.hold, HoldInput(actor="sup", kind="dispute",
                                                         reason="not my loan"))
    await eventually(lambda: work_queue.open_tasks(pg_dsn, kind="call", limit=1000),
                     lambda rs: loan_id not in {r.loan_id for r in rs})
    refused = await asyncio.to_thread(
        cli, env, "outcome", loan_id, "--task-key", task.task_key, "--outcome", "reached",
        "--agent", "a7")
    assert refused.exit_code == EXIT_CODES[ErrorKind.REFUSED], refused.output
    assert refused.stderr.strip() == f"task {task.task_key!r} was withdrawn: dispute hold"
    entries = await case_history.history(stack.env.client, case.pool, loan_id)
    withdrawn = [e for e in entries if e.kind == "task_withdrawn"]
    assert {e.source for e in withdrawn} == {"events", "tasks"}
    assert any(e.rule == "case.hold.dispute" for e in withdrawn)
    assert any(e.summary.endswith("withdrawn: dispute hold") for e in withdrawn)
    await case.finish()


def test_outcome_at_must_carry_an_offset() -> None:
    result = cli({"TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None}, "outcome", "C1",
                 "--task-key", "collection-C1/call", "--outcome", "reached", "--agent", "a7",
                 "--at", "2026-06-01T23:30")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("at: '2026-06-01T23:30' has no UTC offset")
