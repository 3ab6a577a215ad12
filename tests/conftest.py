"""Real servers, each started once per session: embedded PostgreSQL, the provider emulator, the
Temporal time-skipping server (and the dev server for the tests that need visibility)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.wiring import Providers
from infra.codec import data_converter
from infra.database import EmbeddedPostgres, create_pool, migrate
from infra.emulator import ProviderEmulator
from infra.settings import Settings
from infra.temporal_server import start_dev_server, start_test_server
from tests.helpers import running_emulator, scratch_dir, shut_down_after
from worker import emulator_providers, running_worker


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    with scratch_dir("collections-test-") as path:
        yield path


@pytest.fixture(scope="session")
async def pg_dsn(state_dir: Path) -> AsyncIterator[str]:
    if os.environ.get("TEST_DATABASE_URL"):
        dsn = os.environ["TEST_DATABASE_URL"]
        await migrate(dsn)
        yield dsn
        return
    pg = EmbeddedPostgres(state_dir / "postgres")
    dsn = pg.start()
    try:
        await migrate(dsn)
        yield dsn
    finally:
        pg.stop()


@pytest.fixture(scope="session")
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_dsn, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def emulator() -> AsyncIterator[ProviderEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def providers(emulator: ProviderEmulator) -> Providers:
    return emulator_providers(emulator.url, Settings(provider_timeout_seconds=5))


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    async with shut_down_after(await start_test_server(data_converter=data_converter(None))) as env:
        yield env


@pytest.fixture(scope="session")
async def ts_worker(ts_env: WorkflowEnvironment, pool: asyncpg.Pool,
                    providers: Providers) -> AsyncIterator[Worker]:
    async with running_worker(ts_env.client, pool, providers, task_queue="ts-collections") as w:
        yield w


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with shut_down_after(await start_dev_server(None,
                                                      data_converter=data_converter(None))) as env:
        yield env


@pytest.fixture(scope="session")
async def dev_worker(dev_env: WorkflowEnvironment, pool: asyncpg.Pool,
                     providers: Providers) -> AsyncIterator[Worker]:
    async with running_worker(dev_env.client, pool, providers, task_queue="dev-collections") as w:
        yield w


@pytest.fixture
def loan_id() -> str:
    return f"T{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def vault_keys() -> dict[str, bytes]:
    """The borrower vault's keys (issue 18), generated for the session."""
    from infra.codec import generate_key, parse_keys
    return parse_keys(generate_key())


@pytest.fixture(scope="session")
async def vault_worker(ts_env: WorkflowEnvironment, pool: asyncpg.Pool, providers: Providers,
                       vault_keys: dict[str, bytes]) -> AsyncIterator[Worker]:
    """A worker on the test server that reads the borrower vault at send time."""
    async with running_worker(ts_env.client, pool, providers, task_queue="ts-vault",
                              vault_keys=vault_keys) as w:
        yield w
