"""Process faults on the dev server: workers SIGKILLed, the Temporal server restarted on its SQLite
file, PostgreSQL stopped for a while. Cases keep going and nothing is lost or duplicated.

Cases follow the short ladder of `tests/fault_cases.py`, which also holds the invariants checked.

These tests start servers and worker processes of their own: marked `slow`, run by default.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from contracts.channels import channel
from infra.codec import data_converter
from infra.database import EmbeddedPostgres, create_pool, migrate
from infra.emulator import ProviderEmulator
from infra.emulator import wecom as wecom_emulator
from infra.endpoints import free_port
from infra.settings import Settings
from infra.temporal_server import start_dev_server
from tests.fault_cases import (
    NEW_CHANNEL_STEP,
    check_case,
    compressed,
    in_process,
    kill_and_check_takeover,
    new_channel_loans,
    new_channel_outbox,
    new_channel_policy,
    new_loans,
    provider_records,
    results,
    send_attempts,
    wait_for_messages,
)
from tests.helpers import eventually, running_emulator, scratch_dir, start_case, today_of
from tests.worker_process import WorkerProcess, codec_client, new_key, worker_env
from worker import emulator_providers, running_worker
from workflows.collection_workflow import CollectionWorkflow

pytestmark = pytest.mark.slow


def providers_for(url: str) -> Providers:
    return emulator_providers(url, Settings(provider_timeout_seconds=5, send_in_flight_seconds=10))


@pytest.fixture(scope="module")
async def pemu() -> AsyncIterator[ProviderEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir("collections-faults-") as path:
        yield path


def process_env(dev_env: WorkflowEnvironment, pg_dsn: str, emu: ProviderEmulator, queue: str,
                key: str, state: Path) -> dict[str, str]:
    return worker_env(temporal_address=dev_env.client.service_client.config.target_host, dsn=pg_dsn,
                      emulator_url=emu.url, task_queue=queue, key_entry=key, state_dir=state,
                      PROVIDER_TIMEOUT_SECONDS="5", SEND_IN_FLIGHT_SECONDS="10")


def two_workers(dev_env: WorkflowEnvironment, pg_dsn: str, emu: ProviderEmulator, state: Path,
                prefix: str, names: tuple[str, str],
                ) -> tuple[str, Client, WorkerProcess, WorkerProcess]:
    """A fresh queue and key, a client that reads what the workers write, the first worker
    started and the second made (not started): (queue, client, first, second)."""
    key, queue = new_key(), f"{prefix}-{uuid.uuid4().hex[:8]}"
    env = process_env(dev_env, pg_dsn, emu, queue, key, state)
    first = WorkerProcess(names[0], env, state).start()
    return queue, codec_client(dev_env.client, key), first, WorkerProcess(names[1], env, state)


# --------------------------------------------------------------------------------------------


async def test_worker_killed_mid_lifecycle_and_restarted(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, pemu: ProviderEmulator,
    tmp_path: Path,
) -> None:
    queue, client, first, second = two_workers(dev_env, pg_dsn, pemu, tmp_path, "restart",
                                               ("worker-1", "worker-2"))
    try:
        await first.wait_ready()
        loans = new_loans(3, today_of(await dev_env.get_current_time()))
        handles = [await start_case(client, loan, queue, compressed(loan)) for loan in loans]
        await wait_for_messages(in_process(pemu), loans, at_least=4)
        await first.kill()
        await asyncio.sleep(3)  # a policy day and a half with no worker: timers fire, tasks wait
        second.start()
        await second.wait_ready()
        await results(handles)
        for handle, loan in zip(handles, loans, strict=True):
            await check_case(handle, loan, pool, in_process(pemu))
    finally:
        await first.kill()
        await second.stop()


async def test_two_workers_one_killed_the_other_finishes_every_case(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, pemu: ProviderEmulator,
    tmp_path: Path,
) -> None:
    queue, client, doomed, survivor = two_workers(dev_env, pg_dsn, pemu, tmp_path, "pair",
                                                  ("doomed", "survivor"))
    try:
        await doomed.wait_ready()
        loans = new_loans(4, today_of(await dev_env.get_current_time()))
        # Only the doomed worker is polling yet: it takes every case (and keeps them, sticky).
        # Slower days (3 s): the cases must still be running once the survivor has started.
        handles = [await start_case(client, loan, queue, compressed(loan, day_seconds=3))
                   for loan in loans]
        survivor.start()
        await survivor.wait_ready()  # two workers on the queue while the cases run
        await wait_for_messages(in_process(pemu), loans, at_least=6)
        await kill_and_check_takeover(doomed, handles, loans, pool, in_process(pemu))
    finally:
        await doomed.kill()
        await survivor.stop()


async def test_dev_server_restarted_on_its_sqlite_file(
    pool: asyncpg.Pool, pemu: ProviderEmulator, scratch: Path,
) -> None:
    """Our own dev server (not the session's): cases started, server shut down mid-lifecycle, a
    new server on the same SQLite file and port, a new worker: the cases pick up where they were."""
    db_file, port = scratch / "temporal.sqlite", free_port()
    queue = f"server-{uuid.uuid4().hex[:8]}"
    env = await start_dev_server(db_file, port=port, data_converter=data_converter(None))
    try:
        loans = new_loans(3, today_of(await env.get_current_time()))
        async with running_worker(env.client, pool, providers_for(pemu.url), task_queue=queue):
            handles = [await start_case(env.client, loan, queue, compressed(loan))
                       for loan in loans]
            await wait_for_messages(in_process(pemu), loans, at_least=4)
    finally:
        await env.shutdown()
    ids = [h.id for h in handles]
    await asyncio.sleep(2)

    env = await start_dev_server(db_file, port=port, data_converter=data_converter(None))
    try:
        assert env.client.service_client.config.target_host.endswith(f":{port}")
        async with running_worker(env.client, pool, providers_for(pemu.url), task_queue=queue):
            handles = [env.client.get_workflow_handle_for(CollectionWorkflow.run, wid)
                       for wid in ids]
            await results(handles)
            for handle, loan in zip(handles, loans, strict=True):
                await check_case(handle, loan, pool, in_process(pemu))
    finally:
        await env.shutdown()


async def test_postgres_unavailable_for_a_while(
    dev_env: WorkflowEnvironment, pemu: ProviderEmulator, scratch: Path,
) -> None:
    """Our own PostgreSQL is stopped while cases run: their record, reservation and outbox
    activities fail and retry; once it is back every row arrives, once."""
    pg = EmbeddedPostgres(scratch / "postgres")
    dsn = await asyncio.to_thread(pg.start)
    await migrate(dsn)
    pool = await create_pool(dsn, max_size=10)
    queue = f"pgdown-{uuid.uuid4().hex[:8]}"
    try:
        async with running_worker(dev_env.client, pool, providers_for(pemu.url), task_queue=queue):
            loans = new_loans(3, today_of(await dev_env.get_current_time()))
            handles = [await start_case(dev_env.client, loan, queue, compressed(loan))
                       for loan in loans]
            await wait_for_messages(in_process(pemu), loans, at_least=3)
            before = await pool.fetchval("SELECT count(*) FROM events")
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(5)  # two and a half policy days: steps come due, writes fail
            pg = EmbeddedPostgres(scratch / "postgres")
            assert await asyncio.to_thread(pg.start) == dsn
            await results(handles)
            assert await pool.fetchval("SELECT count(*) FROM events") > before
            for handle, loan in zip(handles, loans, strict=True):
                await check_case(handle, loan, pool, in_process(pemu))
    finally:
        await pool.close()
        await asyncio.to_thread(pg.stop)


async def test_worker_killed_mid_send_on_wecom_and_voice_sends_once(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, pemu: ProviderEmulator,
    tmp_path: Path,
) -> None:
    """WeCom has created the task and Twilio placed the call, and both hold their answer, when
    the worker is SIGKILLed: the retry on a second worker finds each in the provider's own log
    (`get_groupmsg_list_v2`, the Calls list) and records it. One task, one call."""
    key, queue = new_key(), f"mid-send-{uuid.uuid4().hex[:8]}"
    env = process_env(dev_env, pg_dsn, pemu, queue, key, tmp_path)
    env.update(WECOM_CORP_ID=wecom_emulator.CORP_ID, WECOM_CORP_SECRET=wecom_emulator.CORP_SECRET,
               WECOM_BASE_URL=pemu.url, WECOM_CALLBACK_TOKEN=wecom_emulator.CALLBACK_TOKEN,
               WECOM_CALLBACK_AES_KEY=wecom_emulator.CALLBACK_AES_KEY)
    client = codec_client(dev_env.client, key)
    first, second = WorkerProcess("worker-1", env, tmp_path), WorkerProcess("worker-2", env,
                                                                            tmp_path)
    loans = new_channel_loans(today_of(await dev_env.get_current_time()))
    pemu.add_fault(str(loans["wecom"].wecom_external_userid), "slow", channel="wecom", times=1,
                   delay=15)
    pemu.add_fault(loans["voice"].phone, "slow", channel="voice", times=1, delay=15)
    try:
        await first.start().wait_ready()
        handles = {name: await start_case(client, loan, queue, new_channel_policy(loan, name))
                   for name, loan in loans.items()}
        # Each provider has the message and holds its answer: the worker is between send and mark.
        await eventually(lambda: asyncio.sleep(0, [
            len(provider_records(pemu, name, loan)) for name, loan in loans.items()]),
            lambda n: n == [1, 1], timeout=60)
        for name, handle in handles.items():
            row = await new_channel_outbox(pool, handle, name)
            assert row is not None and row["status"] == "sending", (name, row)
        pemu.wecom.confirm(external_userid=loans["wecom"].wecom_external_userid)
        await first.kill()

        await second.start().wait_ready()
        await results(list(handles.values()), within=120)
        for name, handle in handles.items():
            [made] = provider_records(pemu, name, loans[name])
            row = await new_channel_outbox(pool, handle, name)
            assert row is not None and (row["status"], row["provider_id"]) == (
                "sent", made["msgid" if name == "wecom" else "sid"]), (name, row)
            contact = await pool.fetchrow(
                "SELECT decision, outcome FROM contacts WHERE idempotency_key = $1",
                f"{handle.id}/{NEW_CHANNEL_STEP}/{name}")
            assert contact["decision"] == "sent", (name, dict(contact))
            # The attempt that marked it sent was a retry: it found the message, sent nothing.
            assert await send_attempts(handle, channel(name).activity or "") >= 2, name
        assert len(pemu.messages(channel="wecom", to=loans["wecom"].wecom_external_userid)) == 1
        assert len(pemu.messages(channel="voice", to=loans["voice"].phone)) == 1
        # Nothing fell back: the one message on each new channel was the contact.
        assert all(pemu.messages(channel="sms", to=loan.phone) == [] for loan in loans.values())
    finally:
        await first.kill()
        await second.stop()
