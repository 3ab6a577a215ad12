"""The API as a loan system meets it: `python -m api` in its own process on a free loopback
port, with the worker's environment, over the session's real servers (the Temporal dev server,
embedded PostgreSQL, the provider emulator) and a worker of its own that shares the API's
encryption keys, so the histories it writes are encrypted as in production."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from infra.codec import EncryptionCodec, data_converter, generate_key, parse_keys
from infra.endpoints import free_port
from tests.api.calls import Api
from worker import running_worker

ROOT = Path(__file__).resolve().parents[2]
TASK_QUEUE = "api-collections"
ROLES = ("loan-system", "agent", "operator", "agency")
AGENT_ID = "agent-7"
AGENCY_ID = "huaxin"  # an agency of policies/agencies/roster.toml


@pytest.fixture(scope="session")
def encryption_keys() -> str:
    return generate_key()


@pytest.fixture(scope="session")
async def api_worker(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, providers: Providers,
                     encryption_keys: str) -> AsyncIterator[Client]:
    keys = parse_keys(encryption_keys)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, namespace=dev_env.client.namespace,
        data_converter=data_converter(EncryptionCodec(keys, next(iter(keys)))))
    async with running_worker(client, pool, providers, task_queue=TASK_QUEUE):
        yield client


@pytest.fixture(scope="session")
async def api(api_worker: Client, dev_env: WorkflowEnvironment, pg_dsn: str, state_dir: Path,
              encryption_keys: str) -> AsyncIterator[Api]:
    keys = {role: secrets.token_urlsafe(24) for role in ROLES}
    names = {"loan-system": "erp", "agent": AGENT_ID, "operator": "ops", "agency": AGENCY_ID}
    port = free_port()
    log = state_dir / "api.log"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "DATABASE_URL": pg_dsn,
        "TASK_QUEUE": TASK_QUEUE,
        "COLLECTIONS_ENCRYPTION_KEYS": encryption_keys,
        "STATE_DIR": str(state_dir / "api-state"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_KEYS": ",".join(f"{names[r]}={r}:{keys[r]}" for r in ROLES),
    }
    proc = _spawn(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc, log)
        yield Api(url, keys, api_worker, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _fail(why: str, log: Path) -> AssertionError:
    return AssertionError(f"{why}:\n{log.read_text()}")


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            if proc.poll() is not None:
                raise _fail(f"the API exited ({proc.returncode})", log)
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise _fail("the API was not ready within 60s", log)
            await asyncio.sleep(0.2)
