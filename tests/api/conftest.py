"""The API as a loan system meets it: `python -m api` in its own process on a free loopback
port, with the worker's environment, over the session's real servers (the Temporal dev server,
embedded PostgreSQL, the provider emulator) and a worker of its own that shares the API's
encryption keys, so the histories it writes are encrypted as in production."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from infra.codec import generate_key
from tests.api.calls import Api
from tests.served_api import encrypted_worker, served_api

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
    async with encrypted_worker(dev_env, pool, providers, encryption_keys, TASK_QUEUE) as client:
        yield client


@pytest.fixture(scope="session")
async def api(api_worker: Client, dev_env: WorkflowEnvironment, pg_dsn: str, state_dir: Path,
              encryption_keys: str) -> AsyncIterator[Api]:
    keys = {role: secrets.token_urlsafe(24) for role in ROLES}
    names = {"loan-system": "erp", "agent": AGENT_ID, "operator": "ops", "agency": AGENCY_ID}
    log = state_dir / "api.log"
    async with served_api(
            dev_env, pg_dsn=pg_dsn, task_queue=TASK_QUEUE, encryption_keys=encryption_keys,
            state_dir=state_dir / "api-state", log=log, ready_path="/readyz",
            api_keys=",".join(f"{names[r]}={r}:{keys[r]}" for r in ROLES)) as url:
        yield Api(url, keys, api_worker, log)
