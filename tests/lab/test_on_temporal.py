"""A backtest on the cluster (workflows/lab_workflow.py) on the dev server with two lab workers:
the book split into shards, each played by whichever worker takes it, the figures of the merged
shards equal to a run on one machine; a shard lost mid-way and played again changes nothing; and
`collect lab run --on-temporal` prints the same JSON as `collect lab run`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner, Result

import starter
from activities.lab_shard import LabShardActivities
from contracts.lab_run import BookRef, LabProgress, LabRunInput, LabShardInput
from lab import shard as lab_shard
from lab.backtest import Backtest, backtest_json, run_backtest
from lab.cluster_run import book_ref, cluster_input
from lab.merge import from_wire
from lab.model_file import load_model
from lab.prices import DEFAULT_PRICES, load_prices
from lab.synthetic import synthetic_book
from service import lab_runs
from service.errors import Refused
from tests.helpers import eventually
from worker import running_lab_worker
from workflows.lab_workflow import LabBacktestWorkflow
from workflows.sandbox import sandbox_runner

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "lab" / "models" / "default.toml"
CHALLENGER = ROOT / "examples" / "challenger.toml"
SPECS = ["default", str(CHALLENGER)]
LOANS, SHARD, SEED, REPLICATES = 40, 8, 7, 50
SHARDS = (LOANS // SHARD) * len(SPECS)


def figures(bt: Backtest) -> dict[str, Any]:
    """What the backtest says, without how long it took."""
    return without_seconds(backtest_json(bt))


def without_seconds(data: dict[str, Any]) -> dict[str, Any]:
    return {"policies": [p["figures"] for p in data["policies"]],
            "differences": [d["figures"] for d in data["differences"]],
            **{k: data[k] for k in ("loans", "seed", "model", "start", "horizon_days")}}


@pytest.fixture(scope="module")
def book() -> LabRunInput:
    loans = synthetic_book(LOANS, seed=SEED)
    return cluster_input(SPECS, loans, book_ref(loans, synthetic_seed=SEED), load_model(MODEL),
                         SEED, load_prices(DEFAULT_PRICES), replicates=REPLICATES,
                         shard_size=SHARD)


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    """The same backtest on this machine, in one process."""
    loans = synthetic_book(LOANS, seed=SEED)
    return figures(run_backtest(SPECS, loans, load_model(MODEL), SEED,
                                load_prices(DEFAULT_PRICES), processes=1,
                                replicates=REPLICATES))


async def own_runtime_client(client: Client) -> Client:
    """A client on a runtime of its own: two workers of one queue must not share one (as two
    worker processes do not)."""
    return await Client.connect(client.service_client.config.target_host,
                                namespace=client.namespace, data_converter=client.data_converter,
                                runtime=Runtime(telemetry=TelemetryConfig()))


@pytest.fixture
async def two_workers(dev_env: WorkflowEnvironment) -> AsyncIterator[str]:
    """Two lab workers on a fresh queue, told apart by their identities."""
    queue = f"lab-{uuid.uuid4().hex[:8]}"
    other = await own_runtime_client(dev_env.client)
    async with running_lab_worker(dev_env.client, task_queue=queue, identity="lab-a"), \
            running_lab_worker(other, task_queue=queue, identity="lab-b"):
        yield queue


async def shard_workers(client: Client, workflow_id: str) -> set[str]:
    """The identities of the workers that started the run's shards."""
    return {e.activity_task_started_event_attributes.identity
            async for e in client.get_workflow_handle(workflow_id).fetch_history_events()
            if e.HasField("activity_task_started_event_attributes")}


async def test_two_workers_give_the_figures_of_a_run_on_one_machine(
        dev_env: WorkflowEnvironment, two_workers: str, book: LabRunInput,
        local: dict[str, Any]) -> None:
    client = dev_env.client
    workflow_id = await lab_runs.start(client, book, task_queue=two_workers)
    done = await lab_runs.result(client, workflow_id)
    assert figures(from_wire(done.figures)) == local
    assert await lab_runs.progress(client, workflow_id) == LabProgress(
        shards_done=SHARDS, shards_total=SHARDS, loans_done=LOANS * len(SPECS),
        loans_total=LOANS * len(SPECS), finished=True)
    assert await shard_workers(client, workflow_id) == {"lab-a", "lab-b"}
    # Deterministic: its history replays on the workflow's code.
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=[LabBacktestWorkflow], workflow_runner=sandbox_runner(),
                   data_converter=client.data_converter).replay_workflow(history)
    # Started again, the same backtest is the same run (its id comes from its input), finished:
    # its figures are read, not played again.
    assert await lab_runs.start(client, book, task_queue=two_workers) == workflow_id

    async def runs() -> int:
        return len([w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")])

    assert await eventually(runs, lambda n: n >= 1) == 1


async def test_a_shard_lost_midway_is_played_again_with_the_same_figures(
        dev_env: WorkflowEnvironment, book: LabRunInput, local: dict[str, Any]) -> None:
    lost: list[int] = []

    def lose_shard_two_once(shard: LabShardInput, first: int, stop: int) -> list[list[Any]]:
        if shard.shard == 2 and shard.policy_index == 1 and not lost and first > shard.first:
            lost.append(first)  # a heartbeat went out: the worker dies mid-shard
            raise RuntimeError("worker lost")
        return lab_shard.play_loans(shard, first, stop)

    queue = f"lab-{uuid.uuid4().hex[:8]}"
    shards = LabShardActivities(lose_shard_two_once, lab_shard.figures, heartbeat_every=3)
    # Fewer shards at once: another run (its id is its input's digest), not the first test's.
    run = dataclasses.replace(book, parallel=3)
    async with running_lab_worker(dev_env.client, task_queue=queue, shards=shards):
        workflow_id = await lab_runs.start(dev_env.client, run, task_queue=queue)
        done = await lab_runs.result(dev_env.client, workflow_id)
    assert lost, "the shard was never lost"
    assert figures(from_wire(done.figures)) == local


def cli(*args: str, env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(starter.app, list(args), env={"COLUMNS": "200", **env})


async def test_the_cli_on_temporal_prints_the_local_json(
        dev_env: WorkflowEnvironment, two_workers: str, tmp_path: Path) -> None:
    # Another seed than the other tests': a run of its own, not theirs found finished.
    args = ["lab", "run", "--synthetic", str(LOANS), "--seed", str(SEED + 1), "--replicates",
            str(REPLICATES), "--shard-size", str(SHARD), "--json", "--processes", "1",
            *[part for spec in SPECS for part in ("--policy", spec)]]
    env: dict[str, str | None] = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace, "STATE_DIR": str(tmp_path),
        "COLLECTIONS_ENCRYPTION_KEYS": None, "LAB_TASK_QUEUE": two_workers}
    # One at a time: CliRunner swaps the process's stdout while it runs.
    here = await asyncio.to_thread(cli, *args, env=env)
    there = await asyncio.to_thread(cli, *args, "--on-temporal", env=env)
    assert here.exit_code == 0, here.output
    assert there.exit_code == 0, there.output
    assert without_seconds(json.loads(there.stdout)) == without_seconds(json.loads(here.stdout))
    assert "on the cluster" in there.stderr


async def test_a_book_file_changed_since_the_start_is_refused_not_retried(
        dev_env: WorkflowEnvironment, two_workers: str, book: LabRunInput) -> None:
    loans_csv = ROOT / "examples" / "loans.csv"
    changed = dataclasses.replace(book, book=BookRef(kind="file", size=12, path=str(loans_csv),
                                                     digest="0" * 64))
    workflow_id = await lab_runs.start(dev_env.client, changed, task_queue=two_workers)
    with pytest.raises(Refused, match="not the file the run was started on"):
        await lab_runs.result(dev_env.client, workflow_id)
