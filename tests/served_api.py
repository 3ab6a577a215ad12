"""The HTTP service (`python -m api`) as the API and console tests run it: a worker of its own on
an encrypted client, and the service in its own process on a free loopback port with the worker's
environment, stopped at the end. Shared by `tests/api/conftest.py` and `tests/console/conftest.py`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from infra.codec import EncryptionCodec, data_converter, parse_keys
from infra.endpoints import free_port
from worker import running_worker

ROOT = Path(__file__).resolve().parents[1]
READY_WITHIN = 60.0  # seconds


@asynccontextmanager
async def encrypted_worker(dev_env: WorkflowEnvironment, pool: asyncpg.Pool,
                           providers: Providers, encryption_keys: str,
                           task_queue: str) -> AsyncIterator[Client]:
    """A client that encrypts payloads with `encryption_keys`, and a worker on it for
    `task_queue`: the histories it writes are encrypted as in production."""
    keys = parse_keys(encryption_keys)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, namespace=dev_env.client.namespace,
        data_converter=data_converter(EncryptionCodec(keys, next(iter(keys)))))
    async with running_worker(client, pool, providers, task_queue=task_queue,
                              vault_keys=keys):  # the API stores borrowers in the vault
        yield client


@asynccontextmanager
async def served_api(dev_env: WorkflowEnvironment, *, pg_dsn: str, task_queue: str,
                     encryption_keys: str, state_dir: Path, log: Path, api_keys: str,
                     ready_path: str, extra_env: dict[str, str] | None = None,
                     ) -> AsyncIterator[str]:
    """`python -m api` in its own process over the session's servers; yields its base URL once
    `ready_path` answers 200, and stops the process at the end."""
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "DATABASE_URL": pg_dsn,
        "TASK_QUEUE": task_queue,
        "COLLECTIONS_ENCRYPTION_KEYS": encryption_keys,
        "STATE_DIR": str(state_dir),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_KEYS": api_keys,
        **(extra_env or {}),
    }
    proc = _spawn(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, ready_path, proc, log)
        yield url
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
    return AssertionError(f"{why}:\n{log.read_text(errors='replace')[-5000:]}")


async def _wait_ready(url: str, ready_path: str, proc: subprocess.Popen[bytes],
                      log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + READY_WITHIN
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            if proc.poll() is not None:
                raise _fail(f"the API exited ({proc.returncode})", log)
            try:
                if (await http.get(ready_path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise _fail(f"the API was not ready within {READY_WITHIN:.0f}s", log)
            await asyncio.sleep(0.2)
