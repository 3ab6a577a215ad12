"""The agents' queue ranked by the amount a call is expected to recover (service/queue_priority.py),
from a behaviour model file: the figure and the order through the service, over the API (its own
process, COLLECT_QUEUE_MODEL set) and through the CLI; without a model, the due order as before."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

import starter
from contracts.behaviour import BehaviourModel, Response
from contracts.names import workflow_id_for
from infra.codec import generate_key
from lab.model_file import write_model
from service import queue_priority, tasks
from service.errors import BadInput
from tests.served_api import served_api

EARLY = Response(answered=0.5, pays_full=0.2)
MIDDLE = Response(answered=0.3, wrong_number=0.1, pays_full=0.1, pays_part=0.2, part_share=0.5,
                  promises=0.1, keeps_promise=0.5)
LATE = Response(answered=0.1, pays_full=0.02)
MODEL = BehaviourModel(name="queue-test", version="1", default=Response(),
                       by_stage={"early": {"call": EARLY}, "middle": {"call": MIDDLE},
                                 "late": {"call": LATE}})
# (stage, outstanding, priority, hours to the deadline) per loan, and what a call is expected to
# recover: 1e6 x 0.5 x 0.2; 5e6 x 0.9 x 0.3 x (0.1 + 0.2 x 0.5 + 0.1 x 0.5); 2e7 x 0.1 x 0.02.
# Balances large enough that the session's other open tasks rank below these.
BOOK = {"a": ("early", "1000000.00", 9, 2), "b": ("middle", "5000000.00", 5, 4),
        "c": ("late", "20000000.00", 5, 6)}
EXPECTED = {"a": Decimal("100000.00"), "b": Decimal("337500.00"), "c": Decimal("40000.00")}
BY_DUE = ["a", "b", "c"]
BY_EXPECTED = ["b", "a", "c"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queue-model") / "model.toml"
    write_model(MODEL, path)
    return path


@pytest.fixture
async def queue(pool: asyncpg.Pool) -> dict[str, str]:
    """Three open call tasks on three recorded cases: loan id by letter."""
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    ids = {}
    for letter, (stage, outstanding, priority, hours) in BOOK.items():
        loan_id = ids[letter] = f"QP{run}{letter}"
        await pool.execute(
            "INSERT INTO cases (loan_id, workflow_id, borrower_key, policy_name, policy_version, "
            "segment, rule_pack, currency, amount_placed, outstanding, stage, state, due_date, "
            "opened_at, updated_at) VALUES ($1, $2, $3, 'default', 'v1', 'standard', 'cn', 'CNY', "
            "$4, $4, $5, 'active', $6, $7, $7)",
            loan_id, workflow_id_for(loan_id), f"b-{loan_id}", Decimal(outstanding), stage,
            now.date(), now)
        await pool.execute(
            "INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by, "
            "created_at) VALUES ($1, $2, $3, 'call', $4, $5, $6, $7)",
            f"{workflow_id_for(loan_id)}/{stage}-call", loan_id, workflow_id_for(loan_id),
            f"{stage}-call", priority, now + timedelta(hours=hours), now)
    return ids


def cli(*args: str, env: dict[str, str | None]) -> Result:
    # A closed Temporal port: listing the queue reads PostgreSQL only.
    return CliRunner().invoke(starter.app, list(args), env={
        "COLUMNS": "200", "TEMPORAL_ADDRESS": "127.0.0.1:1", **env})


def mine(rows: list[tuple[str, str | None]], ids: dict[str, str]) -> list[tuple[str, str | None]]:
    """(letter, figure) of this test's tasks, in the order listed (the session's other tests'
    tasks are in the same queue)."""
    letters = {loan_id: letter for letter, loan_id in ids.items()}
    return [(letters[loan], figure) for loan, figure in rows if loan in letters]


def expected(order: list[str]) -> list[tuple[str, str | None]]:
    return [(letter, str(EXPECTED[letter])) for letter in order]


def test_expected_recovery_per_call_is_reach_times_recovery_share_times_balance() -> None:
    assert queue_priority.reach_chance(MIDDLE) == Decimal("0.27")
    assert queue_priority.recovery_share(MIDDLE) == Decimal("0.25")
    for letter, (stage, outstanding, _, _) in BOOK.items():
        assert queue_priority.expected_per_call(
            MODEL, channel="call", stage=stage, outstanding=Decimal(outstanding),
            currency="CNY") == EXPECTED[letter]
    # A stage or channel the model does not list falls back to its default (nothing here); a
    # currency without a minor unit rounds to whole units.
    assert queue_priority.expected_per_call(MODEL, channel="visit", stage="early",
                                            outstanding=Decimal(1000), currency="CNY") == 0
    assert queue_priority.expected_per_call(MODEL, channel="call", stage="middle",
                                            outstanding=Decimal(5001), currency="JPY") == 338


async def test_the_service_ranks_by_expected_recovery_with_a_model(
        pg_dsn: str, queue: dict[str, str]) -> None:
    ranked = await tasks.open_tasks(pg_dsn, kind="call", limit=tasks.MAX_TASKS, model=MODEL)
    assert mine([(r.loan_id, str(r.expected_per_call)) for r in ranked], queue) == expected(
        BY_EXPECTED)
    mine_rows = [r for r in ranked if r.loan_id in queue.values()]
    assert {(r.stage, r.currency) for r in mine_rows} == {("early", "CNY"), ("middle", "CNY"),
                                                          ("late", "CNY")}
    # Asked for, the due order with the figures still shown; without a model, the due order and
    # no figure, as the queue always was.
    due = await tasks.open_tasks(pg_dsn, kind="call", limit=tasks.MAX_TASKS, model=MODEL,
                                 order="due")
    assert mine([(r.loan_id, str(r.expected_per_call)) for r in due], queue) == expected(BY_DUE)
    plain = await tasks.open_tasks(pg_dsn, kind="call", limit=tasks.MAX_TASKS)
    assert mine([(r.loan_id, None) for r in plain if r.expected_per_call is None], queue) == [
        (letter, None) for letter in BY_DUE]
    with pytest.raises(BadInput, match="COLLECT_QUEUE_MODEL"):
        await tasks.open_tasks(pg_dsn, model=None, order="expected")
    with pytest.raises(BadInput, match=r"^order: .*is not one of due, expected$"):
        await tasks.open_tasks(pg_dsn, model=MODEL, order="soonest")


async def test_the_cli_shows_the_figure_and_the_model_order(
        pg_dsn: str, queue: dict[str, str], model_file: Path) -> None:
    env: dict[str, str | None] = {"DATABASE_URL": pg_dsn, "COLLECT_QUEUE_MODEL": str(model_file)}
    listed = await asyncio.to_thread(cli, "tasks", "--kind", "call", "--limit", "1000",
                                     "--json", env=env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert mine([(r["loan_id"], r["expected_per_call"]) for r in rows], queue) == expected(
        BY_EXPECTED)
    table = await asyncio.to_thread(cli, "tasks", "--kind", "call", "--limit", "1000", env=env)
    assert "expected/call" in table.stdout and "337500.00 CNY" in table.stdout, table.output
    by_due = await asyncio.to_thread(cli, "tasks", "--kind", "call", "--limit", "1000",
                                     "--order", "due", "--json", env=env)
    assert mine([(r["loan_id"], r["expected_per_call"]) for r in json.loads(by_due.stdout)],
                queue) == expected(BY_DUE)
    without = await asyncio.to_thread(cli, "tasks", "--kind", "call", "--limit", "1000",
                                      "--order", "expected", env={**env,
                                                                  "COLLECT_QUEUE_MODEL": None})
    assert without.exit_code == 2, without.output
    assert "COLLECT_QUEUE_MODEL" in without.stderr


@pytest.fixture(scope="module")
async def ranked_api(dev_env: WorkflowEnvironment, pg_dsn: str, model_file: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    """The API in its own process with COLLECT_QUEUE_MODEL set: (url, an agent's key)."""
    state = tmp_path_factory.mktemp("queue-api")
    key = secrets.token_urlsafe(24)
    async with served_api(dev_env, pg_dsn=pg_dsn, task_queue="queue-priority",
                          encryption_keys=generate_key(), state_dir=state / "state",
                          log=state / "api.log", api_keys=f"agent-q=agent:{key}",
                          ready_path="/console/login",
                          extra_env={"COLLECT_QUEUE_MODEL": str(model_file),
                                     "CONSOLE_SECRET": secrets.token_urlsafe(32)}) as url:
        yield url, key


async def test_the_api_ranks_the_queue_by_expected_recovery(
        ranked_api: tuple[str, str], queue: dict[str, str]) -> None:
    url, key = ranked_api
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        ranked = await http.get("/v1/tasks", params={"kind": "call", "limit": 1000})
        assert ranked.status_code == 200, ranked.text
        assert mine([(r["loan_id"], r["expected_per_call"]) for r in ranked.json()],
                    queue) == expected(BY_EXPECTED)
        due = await http.get("/v1/tasks", params={"kind": "call", "limit": 1000, "order": "due"})
        assert mine([(r["loan_id"], r["expected_per_call"]) for r in due.json()],
                    queue) == expected(BY_DUE)
        bad = await http.get("/v1/tasks", params={"order": "soonest"})
        assert bad.status_code == 422, bad.text


async def test_the_console_queue_shows_the_figure_in_the_model_order(
        ranked_api: tuple[str, str], queue: dict[str, str]) -> None:
    url, key = ranked_api
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        login = await http.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf is not None, login.text
        signed_in = await http.post("/console/login", data={
            "csrf": csrf[1], "api_key": key, "zone": "UTC"})
        assert signed_in.status_code in (302, 303), signed_in.text
        page = await http.get("/console/queue")
    assert page.status_code == 200, page.text
    listed = [loan for loan in re.findall(r'data-loan="([^"]+)"', page.text)
              if loan in queue.values()]
    assert listed == [queue[letter] for letter in BY_EXPECTED]
    assert "Expected per call" in page.text and "337,500.00" in page.text
