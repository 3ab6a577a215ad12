"""`python -m infra.stack` as its own process, workers beside it: a second worker attaches to the
running stack (no port fight, endpoints.json untouched), the first is SIGKILLed, and every case
still runs to its end with nothing lost or sent twice. A second stack on the same state folder is
refused, and stopping the stack stops everything it started."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from infra.codec import codec_from_env, data_converter
from infra.emulator import EmulatorClient
from infra.endpoints import free_port, read_endpoints
from infra.stack import KEY_FILE
from tests.fault_cases import (
    compressed,
    kill_and_check_takeover,
    new_loans,
    over_http,
    wait_for_messages,
)
from tests.helpers import start_case, today_of
from tests.worker_process import ROOT, WorkerProcess

pytestmark = pytest.mark.slow
STACK_START_SECONDS = 180  # initdb and the dev server on a loaded machine


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    state: Path
    env: dict[str, str]
    endpoints: dict[str, Any]

    def log(self) -> str:
        return (self.state / "stack.log").read_text(errors="replace")


def clean_env(state: Path, **extra: str) -> dict[str, str]:
    """Nothing configured but the state folder: what the stack and workers find is all local."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "TWILIO_", "SENDGRID_", "COLLECTIONS_", "DATABASE_"))}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "STATE_DIR": str(state)})
    env.update(extra)
    return env


def new_state() -> Path:
    # 0755 outside pytest's 0700 tmp: PostgreSQL runs as its own user when we are root.
    state = Path(tempfile.mkdtemp(prefix="collections-stack-"))
    state.chmod(0o755)
    return state


def spawn_stack(state: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (state / "stack.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "infra.stack"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[RunningStack]:
    state = new_state()
    env = clean_env(state, TEMPORAL_PORT=str(free_port()), UI_PORT=str(free_port()),
                    EMULATOR_PORT=str(free_port()))
    proc = spawn_stack(state, env)
    running = RunningStack(proc, state, env, {})
    try:
        deadline = asyncio.get_running_loop().time() + STACK_START_SECONDS
        while (found := read_endpoints(state)) is None or found.get("pid") != proc.pid:
            assert proc.poll() is None, f"stack exited early:\n{running.log()[-3000:]}"
            assert asyncio.get_running_loop().time() < deadline, running.log()[-3000:]
            await asyncio.sleep(0.2)
        running.endpoints = found
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(state, ignore_errors=True)


async def stack_client(stack: RunningStack) -> Client:
    """A client like the starter's: the stack's address and its local encryption key."""
    codec = codec_from_env({}, dev_key_file=stack.state / KEY_FILE)
    return await Client.connect(stack.endpoints["temporal_address"],
                                data_converter=data_converter(codec))


async def test_second_worker_attaches_and_takes_over_from_a_killed_one(
        stack: RunningStack) -> None:
    queue = f"stack-{uuid.uuid4().hex[:8]}"
    env = clean_env(stack.state, TASK_QUEUE=queue, PROVIDER_TIMEOUT_SECONDS="5",
                    SEND_IN_FLIGHT_SECONDS="10")
    doomed = WorkerProcess("doomed", env, stack.state).start()
    survivor = WorkerProcess("survivor", env, stack.state)
    client = await stack_client(stack)
    pool = await asyncpg.create_pool(stack.endpoints["dsn"], min_size=1, max_size=4)
    assert pool is not None
    ctl = EmulatorClient(stack.endpoints["emulator_url"])
    try:
        await doomed.wait_ready(within=120)
        loans = new_loans(4, today_of(datetime.now(UTC)))  # the dev server keeps real time
        handles = [await start_case(client, loan, queue, compressed(loan, day_seconds=3))
                   for loan in loans]
        survivor.start()
        await survivor.wait_ready(within=120)
        # It attached: the stack's file is the stack's, and the stack's emulator serves both.
        assert read_endpoints(stack.state) == stack.endpoints
        assert "started here: nothing" in survivor.log()
        await wait_for_messages(over_http(ctl), loans, at_least=6, within=120)
        await kill_and_check_takeover(doomed, handles, loans, pool, over_http(ctl), within=240)
    finally:
        await doomed.kill()
        await survivor.stop()
        await ctl.close()
        await pool.close()


async def test_a_second_stack_on_the_same_state_is_refused(stack: RunningStack) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.stack", cwd=ROOT, env=stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode != 0 and b"already runs" in out, out
    assert read_endpoints(stack.state) == stack.endpoints


async def test_stopping_the_stack_stops_what_it_started(stack: RunningStack) -> None:
    """Last in this module: SIGTERM, and the servers, the emulator and the file are gone."""
    emulator_url = stack.endpoints["emulator_url"]
    stack.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stack.proc.wait, 60) == 0, stack.log()[-3000:]
    assert read_endpoints(stack.state) is None
    assert not (stack.state / "endpoints.json").exists()
    async with EmulatorClient(emulator_url) as ctl:
        with pytest.raises(OSError):
            await ctl.health()
    with pytest.raises(RuntimeError):
        await stack_client(stack)
