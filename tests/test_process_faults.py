"""Process faults on the dev server: workers SIGKILLed, the Temporal server restarted on its SQLite
file, PostgreSQL stopped for a while. Cases keep going and nothing is lost or duplicated.

Cases follow a short ladder (SMS, SMS + e-mail, a call, SMS + e-mail, write-off with an e-mail
notice) under a compressed policy clock (`day_seconds=2`: a policy day lasts 2 real seconds), so a
whole lifecycle takes about 15 s of real time on the dev server. Where a fault keeps the case from
running for a while, steps that came due meanwhile may be superseded by a later one: the checks are
the invariants, not a fixed count:

- every case ends written off, and every ladder step was either run or recorded as skipped;
- one provider message per outbox key marked sent, and one outbox key per provider message
  (no duplicate, nothing claimed as sent that the provider does not have);
- the events table holds exactly the case's timeline (nothing lost; keys make duplicates
  impossible), and the case row shows the final state.

These tests start servers and worker processes of their own: marked `slow`, run by default.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from infra.codec import data_converter
from infra.database import EmbeddedPostgres, create_pool, migrate
from infra.emulator import ProviderEmulator
from infra.temporal_server import start_dev_server
from tests.helpers import eventually, make_loan, pinned, start_case, today_of
from tests.worker_process import WorkerProcess, codec_client, new_key, worker_env
from activities.wiring import Providers
from worker import running_worker
from workflows.collection_workflow import CollectionWorkflow
from contracts.messages import CaseState, LoanInput, Stage
from contracts.policy import ResolvedPolicy, Step

pytestmark = pytest.mark.slow

SID = "AC" + "0" * 32
LADDER = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="early-reminder", day=2, hour=10, stage=Stage.EARLY, kind="message",
         channels=["sms", "email"], template="early_reminder"),
    Step(id="early-call", day=3, hour=11, stage=Stage.EARLY, kind="call"),
    Step(id="firm-reminder", day=4, hour=10, stage=Stage.MIDDLE, kind="message",
         channels=["sms", "email"], template="firm_reminder", tone="firm"),
    Step(id="write-off", day=6, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", tone="formal", notice="collection_ending"),
]


def compressed(loan: LoanInput, day_seconds: int = 2) -> ResolvedPolicy:
    # A send attempt lost with a killed worker is retried after its start-to-close timeout: keep it
    # short here (60 s by default). The database activities' 30 s is the workflow's own.
    policy = pinned(loan, day_seconds=day_seconds, send_timeout_seconds=5)
    return policy.model_copy(update={"steps": LADDER, "ladder_name": "fault-test"})


def new_loans(n: int, today: date) -> list[LoanInput]:
    return [make_loan(f"P{uuid.uuid4().hex[:10]}", due=today) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def providers_for(url: str) -> Providers:
    return Providers(twilio_sid=SID, twilio_token="test-token", twilio_base_url=url,
                     twilio_from="+15005550006", sendgrid_key="SG.test", sendgrid_base_url=url,
                     sendgrid_from="collections@lender.example", http_timeout_seconds=5,
                     in_flight_for=timedelta(seconds=10))


@pytest.fixture(scope="module")
async def pemu() -> AsyncIterator[ProviderEmulator]:
    emu = ProviderEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A 0755 folder outside pytest's 0700 tmp (PostgreSQL runs as its own user when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="collections-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def messages_sent(emu: ProviderEmulator, loans: list[LoanInput]) -> int:
    return sum(len(emu.messages(to=loan.phone)) + len(emu.messages(to=loan.email)) for loan in loans)


async def wait_for_messages(emu: ProviderEmulator, loans: list[LoanInput], at_least: int,
                            timeout: float = 60) -> None:
    await eventually(lambda: messages_sent(emu, loans), lambda n: n >= at_least, timeout=timeout)


async def results(handles: list[WorkflowHandle], timeout: float = 120) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout)


async def check_case(handle: WorkflowHandle, loan: LoanInput, pool: asyncpg.Pool,
                     emu: ProviderEmulator) -> dict[str, int]:
    """The invariants of a case that went through faults; returns its message counts."""
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result

    timeline = await handle.query(CollectionWorkflow.timeline)
    accounted = {t.detail.get("step") for t in timeline if t.kind in ("step_started", "step_skipped")}
    assert accounted >= {s.id for s in LADDER}, [(t.kind, t.summary) for t in timeline]

    # Provider messages <-> outbox rows marked sent, one to one.
    rows = await pool.fetch("SELECT outbox_key, channel, provider_id FROM outbox "
                            "WHERE outbox_key LIKE $1 AND status = 'sent'", handle.id + "/%")
    sms = [m["id"] for m in emu.messages(channel="sms", to=loan.phone)]
    assert Counter(sms) == Counter(r["provider_id"] for r in rows if r["channel"] == "sms"), (sms, rows)
    mail_keys = [m["custom_args"]["outbox_key"] for m in emu.messages(channel="email", to=loan.email)]
    assert Counter(mail_keys) == Counter(r["outbox_key"] for r in rows if r["channel"] == "email"), (
        mail_keys, rows)
    stuck = await pool.fetch("SELECT outbox_key, status FROM outbox WHERE outbox_key LIKE $1 "
                             "AND status NOT IN ('sent', 'failed')", handle.id + "/%")
    assert not stuck, stuck
    started = [t.detail["step"] for t in timeline if t.kind == "step_started"]
    message_steps = {s.id: s for s in LADDER if s.kind in ("message", "write_off")}
    expected = sum(len(message_steps[s].channels or ["email"]) for s in started if s in message_steps)
    assert len(rows) == expected, (started, rows)

    # The database has the whole timeline, once.
    events = await eventually(
        lambda: pool.fetch("SELECT kind FROM events WHERE loan_id = $1", loan.loan_id),
        lambda es: len(es) >= len(timeline))
    assert Counter(e["kind"] for e in events) == Counter(t.kind for t in timeline)
    case = await pool.fetchrow("SELECT state, stage FROM cases WHERE loan_id = $1", loan.loan_id)
    assert case["state"] == "written_off" and case["stage"] == "written_off"
    contacts = await pool.fetch("SELECT idempotency_key, outcome FROM contacts WHERE loan_id = $1 "
                                "AND decision = 'sent' AND channel IN ('sms', 'email')", loan.loan_id)
    assert {c["idempotency_key"] for c in contacts} == {r["outbox_key"] for r in rows}
    assert all(c["outcome"] == "sent" for c in contacts), contacts
    return {"sms": len(sms), "email": len(mail_keys)}


async def identities(handle: WorkflowHandle) -> list[str]:
    """Worker identities that completed this workflow's tasks, in order."""
    found = []
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            found.append(e.workflow_task_completed_event_attributes.identity)
    return found


def process_env(dev_env: WorkflowEnvironment, pg_dsn: str, emu: ProviderEmulator, queue: str,
                key: str, state: Path) -> dict[str, str]:
    return worker_env(temporal_address=dev_env.client.service_client.config.target_host, dsn=pg_dsn,
                      emulator_url=emu.url, task_queue=queue, key_entry=key, state_dir=state,
                      PROVIDER_TIMEOUT_SECONDS="5", SEND_IN_FLIGHT_SECONDS="10")


# --------------------------------------------------------------------------------------------


async def test_worker_killed_mid_lifecycle_and_restarted(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, pemu: ProviderEmulator,
    tmp_path: Path,
) -> None:
    key, queue = new_key(), f"restart-{uuid.uuid4().hex[:8]}"
    env = process_env(dev_env, pg_dsn, pemu, queue, key, tmp_path)
    client = codec_client(dev_env.client, key)
    first = WorkerProcess("worker-1", env, tmp_path).start()
    second = WorkerProcess("worker-2", env, tmp_path)
    try:
        await first.wait_ready()
        loans = new_loans(3, today_of(await dev_env.get_current_time()))
        handles = [await start_case(client, loan, queue, compressed(loan)) for loan in loans]
        await wait_for_messages(pemu, loans, at_least=4)
        await first.kill()
        await asyncio.sleep(3)  # a policy day and a half with no worker: timers fire, tasks wait
        second.start()
        await second.wait_ready()
        await results(handles)
        for handle, loan in zip(handles, loans, strict=True):
            await check_case(handle, loan, pool, pemu)
    finally:
        await first.kill()
        await second.stop()


async def test_two_workers_one_killed_the_other_finishes_every_case(
    dev_env: WorkflowEnvironment, pg_dsn: str, pool: asyncpg.Pool, pemu: ProviderEmulator,
    tmp_path: Path,
) -> None:
    key, queue = new_key(), f"pair-{uuid.uuid4().hex[:8]}"
    env = process_env(dev_env, pg_dsn, pemu, queue, key, tmp_path)
    client = codec_client(dev_env.client, key)
    doomed = WorkerProcess("doomed", env, tmp_path).start()
    survivor = WorkerProcess("survivor", env, tmp_path)
    try:
        await doomed.wait_ready()
        loans = new_loans(4, today_of(await dev_env.get_current_time()))
        # Only the doomed worker is polling yet: it takes every case (and keeps them, sticky).
        # Slower days (3 s): the cases must still be running once the survivor has started.
        handles = [await start_case(client, loan, queue, compressed(loan, day_seconds=3))
                   for loan in loans]
        survivor.start()
        await survivor.wait_ready()  # two workers on the queue while the cases run
        await wait_for_messages(pemu, loans, at_least=6)
        assert doomed.proc is not None
        doomed_id = f"{doomed.proc.pid}@"
        await doomed.kill()
        running = [(await h.describe()).status == WorkflowExecutionStatus.RUNNING for h in handles]
        assert any(running), "every case finished before the kill: nothing was tested"
        await results(handles)
        for handle, loan, was_running in zip(handles, loans, running, strict=True):
            await check_case(handle, loan, pool, pemu)
            ids = await identities(handle)
            assert ids[0].startswith(doomed_id), ids  # the killed worker had the case...
            if was_running:
                assert not ids[-1].startswith(doomed_id), ids  # ...the survivor finished it
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
            handles = [await start_case(env.client, loan, queue, compressed(loan)) for loan in loans]
            await wait_for_messages(pemu, loans, at_least=4)
    finally:
        await env.shutdown()
    ids = [h.id for h in handles]
    await asyncio.sleep(2)

    env = await start_dev_server(db_file, port=port, data_converter=data_converter(None))
    try:
        assert env.client.service_client.config.target_host.endswith(f":{port}")
        async with running_worker(env.client, pool, providers_for(pemu.url), task_queue=queue):
            handles = [env.client.get_workflow_handle_for(CollectionWorkflow.run, wid) for wid in ids]
            await results(handles)
            for handle, loan in zip(handles, loans, strict=True):
                await check_case(handle, loan, pool, pemu)
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
            handles = [await start_case(dev_env.client, loan, queue, compressed(loan)) for loan in loans]
            await wait_for_messages(pemu, loans, at_least=3)
            before = await pool.fetchval("SELECT count(*) FROM events")
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(5)  # two and a half policy days: steps come due, writes fail
            pg = EmbeddedPostgres(scratch / "postgres")
            assert await asyncio.to_thread(pg.start) == dsn
            await results(handles)
            assert await pool.fetchval("SELECT count(*) FROM events") > before
            for handle, loan in zip(handles, loans, strict=True):
                await check_case(handle, loan, pool, pemu)
    finally:
        await pool.close()
        await asyncio.to_thread(pg.stop)
