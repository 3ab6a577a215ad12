"""`collect place` and `collect recall` on a real case (time-skipping server, PostgreSQL, the
emulator), through the CLI in a thread (the worker needs this event loop meanwhile), with the
exit code of each kind of answer (`cli/exit_codes.py`).

The roster is the shipped one: 2600 CNY is `dongfang`'s balance band; `huaxin` takes it by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

import starter
from cli.exit_codes import EXIT_CODES
from contracts.messages import Stage
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from service.errors import ErrorKind
from tests.helpers import Case, Stack, eventually, new_loan, pinned, start_case

STEPS = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="write-off", day=300, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", notice="collection_ending"),
]
REFUSED, BAD_INPUT = EXIT_CODES[ErrorKind.REFUSED], EXIT_CODES[ErrorKind.BAD_INPUT]
NOT_FOUND, CLOSED = EXIT_CODES[ErrorKind.NOT_FOUND], EXIT_CODES[ErrorKind.CLOSED]


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


async def _open(stack: Stack, loan_id: str) -> Case:
    loan, now, today = await new_loan(stack, loan_id, 0, 9)
    loan.amount_overdue, loan.interest, loan.fees = (
        Decimal("2600.00"), Decimal("150.00"), Decimal("50.00"))
    policy = pinned(loan).model_copy(update={"steps": STEPS, "ladder_name": "test"})
    handle = await start_case(stack.env.client, loan, stack.task_queue, policy)
    return Case(stack, loan, handle, now, today)


def _runner(env: WorkflowEnvironment, state_dir: Path) -> Callable[..., Awaitable[Result]]:
    # An empty state folder: no dev key file, so no codec, like the session's test server.
    variables: dict[str, str | None] = {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace, "STATE_DIR": str(state_dir),
        "COLLECTIONS_ENCRYPTION_KEYS": None, "DATABASE_URL": None, "COLUMNS": "200"}

    async def collect(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, starter.app, list(args),
                                       env=variables)

    return collect


async def _rows(case: Case) -> list[asyncpg.Record]:
    return await case.pool.fetch(
        "SELECT agency_id, end_reason, ended_at FROM placements WHERE loan_id = $1 ORDER BY id",
        case.loan.loan_id)


async def test_place_and_recall_a_real_case_with_each_exit_code(
        stack: Stack, loan_id: str, tmp_path: Path) -> None:
    case = await _open(stack, loan_id)
    collect = _runner(stack.env, tmp_path)

    placed = await collect("place", loan_id, "--reason", "hardship review")
    assert placed.exit_code == 0, placed.output
    assert "dongfang" in placed.stdout and "outstanding: 2600.00 CNY" in placed.stdout
    assert (await case.status()).placed_with == "dongfang"

    again = await collect("place", loan_id)
    assert again.exit_code == REFUSED and "already placed" in again.stderr

    recalled = await collect("recall", loan_id, "--reason", "wrong band", "--actor", "ops.li")
    assert recalled.exit_code == 0, recalled.output
    assert "recalled from agency dongfang" in recalled.stdout
    assert (await case.status()).placed_with is None

    not_placed = await collect("recall", loan_id, "--reason", "twice")
    assert not_placed.exit_code == REFUSED and "case is not placed" in not_placed.stderr
    unknown = await collect("place", loan_id, "--agency", "nosuch")
    assert unknown.exit_code == REFUSED
    assert unknown.stderr.strip() == "no agency 'nosuch' in the roster"

    named = await collect("place", loan_id, "--agency", "huaxin")
    assert named.exit_code == 0, named.output
    assert "huaxin" in named.stdout
    rows = await eventually(lambda: _rows(case), lambda r: len(r) == 2)
    assert [(r["agency_id"], r["end_reason"]) for r in rows] == [
        ("dongfang", "recalled"), ("huaxin", None)]

    await case.finish()
    closed = await collect("recall", loan_id, "--reason", "too late")
    assert closed.exit_code == CLOSED, closed.output
    missing = await collect("place", "NOSUCHLOAN9")
    assert missing.exit_code == NOT_FOUND
    assert missing.stderr == "no collection case for loan NOSUCHLOAN9\n"


@pytest.mark.parametrize(("args", "line"), [
    (["recall", "L1"], "--reason: is required but missing"),
    (["recall", "L1", "--reason", " "], "reason: is required but empty"),
    (["place", "bad id!"], "loan: must be 1-64 characters of letters, digits, . _ -, starting "
                           "with a letter or digit, without '..'"),
    (["place", "L1", "--agency", "huaxin/east"],
     "agency: must be 1-64 characters of letters, digits, . _ -"),
])
def test_bad_input_is_one_line_and_exit_2_without_a_server(args: list[str], line: str) -> None:
    result = CliRunner().invoke(starter.app, args, env={
        "TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None, "COLUMNS": "200"})
    assert result.exit_code == BAD_INPUT, result.output
    assert result.stderr == line + "\n"


def test_help_names_both_verbs_under_placements() -> None:
    result = CliRunner().invoke(starter.app, ["--help"], env={"COLUMNS": "200"})
    assert "Placements" in result.stdout
    assert "place " in result.stdout and "recall " in result.stdout
