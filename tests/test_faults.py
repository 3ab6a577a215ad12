"""Provider faults and exactly-once effects, on the dev server in real time.

Why the dev server: checked on the time-skipping test server (temporal-test-server 1.40), a running
activity's start-to-close timeout does fire in real time (2 s), but the retry backoff after it is
skipped (a 30 s backoff retried at once): it cannot show how long a retry waited (Retry-After,
exponential backoff). These tests run their own worker on their own task queue against their own
provider emulator, which logs when every send request arrived.

Every case uses a borrower time zone where it is mid-afternoon now (inside the contact window) and
a due date that makes one message step due at once:
- due = today - 1: `early-sms` (day 1, 10:00; SMS only) is due; `pre-due-reminder` is superseded.
- due = today - 14: `formal-notice` (day 14, 10:00; e-mail only) is due; the earlier steps are
  superseded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, web
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database.records import RecordActivities
from activities.wiring import Providers, activities_for, close_activities
from contracts.activity_io import (
    RECORD,
    SEND_EMAIL,
    SEND_SMS,
    RecordBatch,
    RecordResult,
    SendResult,
)
from contracts.messages import CaseState, LoanInput, PaymentInput
from infra.emulator import Fault, ProviderEmulator
from infra.settings import Settings
from tests.helpers import eventually, make_loan, pinned, start_case
from tests.worker_process import (
    WorkerProcess,
    codec_client,
    due_for,
    new_key,
    window_timezone,
    worker_env,
)
from worker import emulator_providers, running_worker
from workflows.collection_workflow import CollectionWorkflow
from workflows.sandbox import sandbox_runner


class RecordingEmulator(ProviderEmulator):
    """The emulator, also noting when each send request arrived and what it was answered."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[dict[str, Any]] = []

    def _take_fault(self, channel: str, recipients: list[str]) -> Fault | None:
        fault = super()._take_fault(channel, recipients)
        self.attempts.append({"at": time.monotonic(), "channel": channel, "to": recipients,
                              "fault": fault.kind if fault else None})
        return fault

    def attempts_to(self, address: str) -> list[dict[str, Any]]:
        return [a for a in self.attempts if address.casefold() in (r.casefold() for r in a["to"])]


def fault_providers(url: str) -> Providers:
    # A provider call may take longer than the policy's send timeout (2 s in the slow test):
    # the HTTP client outlives the attempt, the outbox reconciles the retry.
    return emulator_providers(url, Settings(provider_timeout_seconds=10, send_in_flight_seconds=3))


@pytest.fixture(scope="module")
async def femu() -> AsyncIterator[RecordingEmulator]:
    emu = RecordingEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture(scope="module")
async def fworker(dev_env: WorkflowEnvironment, pool: asyncpg.Pool,
                  femu: RecordingEmulator) -> AsyncIterator[Worker]:
    async with running_worker(dev_env.client, pool, fault_providers(femu.url),
                              task_queue=f"faults-{uuid.uuid4().hex[:8]}") as w:
        yield w


@pytest.fixture
async def cleanup() -> AsyncIterator[list[WorkflowHandle]]:
    """Handles to terminate after the test: cases left waiting days for their next step."""
    handles: list[WorkflowHandle] = []
    yield handles
    for h in handles:
        with contextlib.suppress(Exception):
            await h.terminate("test finished")


def case_loan(loan_id: str, days_ago: int, **overrides: Any) -> LoanInput:
    tz = window_timezone()
    return make_loan(loan_id, due=due_for(tz, days_ago), timezone=tz, **overrides)


async def outbox_row(pool: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM outbox WHERE outbox_key = $1", key)


async def wait_outbox(pool: asyncpg.Pool, key: str, status: str,
                      within: float = 60) -> asyncpg.Record:
    return await eventually(lambda: outbox_row(pool, key),
                            lambda r: r is not None and r["status"] == status, timeout=within)


async def activity_runs(handle: WorkflowHandle, activity_type: str) -> list[dict[str, Any]]:
    """Per scheduled activity of this type: its final attempt number, last failure and outcome."""
    runs: dict[int, dict[str, Any]] = {}
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == activity_type:
                runs[e.event_id] = {"attempt": 0, "last_failure": None, "outcome": None,
                                    "result": None}
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = e.activity_task_started_event_attributes
            if started.scheduled_event_id in runs:
                runs[started.scheduled_event_id]["attempt"] = started.attempt
                if started.HasField("last_failure"):
                    runs[started.scheduled_event_id]["last_failure"] = started.last_failure
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = e.activity_task_completed_event_attributes
            if completed.scheduled_event_id in runs:
                runs[completed.scheduled_event_id]["outcome"] = "completed"
                runs[completed.scheduled_event_id]["result"] = completed.result
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = e.activity_task_failed_event_attributes
            if failed.scheduled_event_id in runs:
                runs[failed.scheduled_event_id]["outcome"] = "failed"
    return list(runs.values())


async def send_result(client: Client, run: dict[str, Any]) -> SendResult:
    [result] = await client.data_converter.decode(run["result"].payloads, [SendResult])
    return result


async def completed_send(handle: WorkflowHandle, activity_type: str = SEND_SMS,
                         within: float = 60) -> dict[str, Any]:
    runs = await eventually(lambda: activity_runs(handle, activity_type),
                            lambda rs: any(r["outcome"] == "completed" for r in rs),
                            timeout=within)
    return next(r for r in runs if r["outcome"] == "completed")


@contextlib.asynccontextmanager
async def _closing_twilio(acts: list[Any]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await close_activities(acts)


# --------------------------------------------------------------------------------------------
# 1. Exactly-once effects


async def test_slow_provider_times_out_and_the_retry_does_not_resend(
    dev_env: WorkflowEnvironment, fworker: Worker, femu: RecordingEmulator, pool: asyncpg.Pool,
    loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    """The provider takes the SMS at once but answers after 5 s; the attempt times out at 2 s.

    The retry finds the claim still "sending", asks Twilio's message log (To, DateSent, body hash),
    finds the message and marks it sent instead of sending it again: one SMS for the borrower.
    """
    loan = case_loan(loan_id, days_ago=1)
    femu.add_fault(loan.phone, "slow", channel="sms", times=1, delay=5)
    handle = await start_case(dev_env.client, loan, fworker.task_queue,
                              pinned(loan, send_timeout_seconds=2))
    cleanup.append(handle)

    run = await completed_send(handle)
    assert run["attempt"] >= 2, run
    # attempt 1 timed out
    assert run["last_failure"].HasField("timeout_failure_info"), run["last_failure"]
    result = await send_result(dev_env.client, run)
    assert result.status == "sent" and result.reused, result  # reconciled, not resent

    row = await wait_outbox(pool, f"{handle.id}/early-sms/sms", "sent")
    assert row["provider_id"] == result.provider_id
    # Let the first attempt's late answer arrive too: still one message.
    await asyncio.sleep(max(0.0, femu.attempts_to(loan.phone)[0]["at"] + 5.5 - time.monotonic()))
    sms = femu.messages(channel="sms", to=loan.phone)
    assert len(sms) == 1, sms
    assert sms[0]["id"] == row["provider_id"]
    assert len(femu.attempts_to(loan.phone)) == 1  # no second POST reached the provider
    contact = await eventually(
        lambda: pool.fetchrow("SELECT decision, outcome FROM contacts WHERE idempotency_key = $1",
                              f"{handle.id}/early-sms/sms"),
        lambda r: r is not None and r["outcome"] == "sent")
    assert contact["decision"] == "sent"


async def test_worker_killed_between_send_and_completion(
    dev_env: WorkflowEnvironment, femu: RecordingEmulator, pg_dsn: str, pool: asyncpg.Pool,
    loan_id: str, tmp_path: Path, cleanup: list[WorkflowHandle],
) -> None:
    """`python worker.py` is SIGKILLed while Twilio has the SMS but has not answered yet.

    The claim stays "sending"; after the attempt's start-to-close timeout the retry runs on a second
    worker process, finds the message in Twilio's log and records it: one SMS, and the case goes on
    (a payment, sent twice by the loan system, closes it with one receipt and one payment row).
    """
    key = new_key()
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    env = worker_env(temporal_address=dev_env.client.service_client.config.target_host, dsn=pg_dsn,
                     emulator_url=femu.url, task_queue=queue, key_entry=key, state_dir=tmp_path,
                     PROVIDER_TIMEOUT_SECONDS="20", SEND_IN_FLIGHT_SECONDS="30")
    client = codec_client(dev_env.client, key)
    loan = case_loan(loan_id, days_ago=1)
    femu.add_fault(loan.phone, "slow", channel="sms", times=1, delay=15)

    first = WorkerProcess("worker-1", env, tmp_path).start()
    second = WorkerProcess("worker-2", env, tmp_path)
    try:
        await first.wait_ready()
        handle = await start_case(client, loan, queue, pinned(loan, send_timeout_seconds=5))
        cleanup.append(handle)
        # Twilio has stored the message and holds its answer: the worker is between send and mark.
        await eventually(lambda: asyncio.sleep(0, femu.messages(channel="sms", to=loan.phone)),
                         lambda m: len(m) == 1, timeout=60)
        row = await outbox_row(pool, f"{handle.id}/early-sms/sms")
        assert row is not None and row["status"] == "sending"
        await first.kill()

        second.start()
        await second.wait_ready()
        row = await wait_outbox(pool, f"{handle.id}/early-sms/sms", "sent", within=90)
        run = await completed_send(handle)
        assert run["attempt"] >= 2
        assert (await send_result(client, run)).reused
        assert len(femu.messages(channel="sms", to=loan.phone)) == 1
        assert row["provider_id"] == femu.messages(channel="sms", to=loan.phone)[0]["id"]

        # The case continues on the second worker. The loan system sends the payment twice.
        payment = PaymentInput(payment_id="pay-1", amount=Decimal("1200.00"), currency="CNY")
        await handle.signal(CollectionWorkflow.pay, payment)
        await handle.signal(CollectionWorkflow.pay, payment)
        result = await asyncio.wait_for(handle.result(), 90)
        assert result.state == CaseState.PAID
        sms = femu.messages(channel="sms", to=loan.phone)
        assert len(sms) == 2, [m["body"] for m in sms]  # the reminder once, the receipt once
        assert "paid" in sms[1]["body"].lower()
        payments = await pool.fetch("SELECT payment_id FROM payments WHERE loan_id = $1",
                                    loan.loan_id)
        assert [p["payment_id"] for p in payments] == ["pay-1"]
        sent = await pool.fetch(
            "SELECT outbox_key FROM outbox WHERE outbox_key LIKE $1 AND status = 'sent'",
            handle.id + "/%")
        assert len(sent) == len(femu.messages(to=loan.phone)) + len(femu.messages(to=loan.email))
    finally:
        await first.kill()
        await second.stop()


async def test_retried_database_writes_never_duplicate_rows(
    dev_env: WorkflowEnvironment, femu: RecordingEmulator, pool: asyncpg.Pool, loan_id: str,
    cleanup: list[WorkflowHandle],
) -> None:
    """Every `record` batch is written, then its attempt fails (as if the worker died before
    reporting): Temporal retries it, and the keyed inserts make the second write a no-op."""
    retries: list[int] = []
    records = RecordActivities(pool)

    @activity.defn(name=RECORD)
    async def record_then_lose_the_ack(batch: RecordBatch) -> RecordResult:
        result = await records.record(batch)
        if activity.info().attempt == 1:
            raise ApplicationError("connection lost after commit")
        retries.append(result.written)
        return result

    acts = [a for a in activities_for(pool, fault_providers(femu.url))
            if getattr(a, "__temporal_activity_definition").name != RECORD]
    queue = f"dbretry-{uuid.uuid4().hex[:8]}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[CollectionWorkflow],
                      activities=[*acts, record_then_lose_the_ack],
                      workflow_runner=sandbox_runner()), \
            _closing_twilio(acts):
        loan = case_loan(loan_id, days_ago=1)
        handle = await start_case(dev_env.client, loan, queue, pinned(loan))
        cleanup.append(handle)
        await wait_outbox(pool, f"{handle.id}/early-sms/sms", "sent")
        payment = PaymentInput(payment_id="pay-1", amount=Decimal("1200.00"), currency="CNY")
        await handle.signal(CollectionWorkflow.pay, payment)
        await handle.signal(CollectionWorkflow.pay, payment)
        result = await asyncio.wait_for(handle.result(), 90)
        assert result.state == CaseState.PAID
        timeline = await handle.query(CollectionWorkflow.timeline)

    assert retries and all(n == 0 for n in retries), retries  # every retry found its rows written
    events = await pool.fetch("SELECT idempotency_key, kind FROM events WHERE loan_id = $1",
                              loan.loan_id)
    assert len(events) == len(timeline)
    assert sorted(e["kind"] for e in events) == sorted(t.kind for t in timeline)
    assert await pool.fetchval("SELECT count(*) FROM payments WHERE loan_id = $1",
                               loan.loan_id) == 1
    stages = await pool.fetch("SELECT to_stage FROM stage_history WHERE loan_id = $1", loan.loan_id)
    assert len(stages) == len({s["to_stage"] for s in stages})
    case = await pool.fetchrow("SELECT state, outstanding FROM cases WHERE loan_id = $1",
                               loan.loan_id)
    assert case["state"] == "paid" and case["outstanding"] == 0


# --------------------------------------------------------------------------------------------
# 2. Provider faults


async def test_rate_limit_honours_retry_after(
    dev_env: WorkflowEnvironment, fworker: Worker, femu: RecordingEmulator, pool: asyncpg.Pool,
    loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    """429 with Retry-After: 5 (longer than the 2 s the retry policy would wait): the next
    attempt comes no sooner than 5 s later, and the SMS then goes out once."""
    loan = case_loan(loan_id, days_ago=1)
    femu.add_fault(loan.phone, "rate_limit", channel="sms", times=1, retry_after=5)
    handle = await start_case(dev_env.client, loan, fworker.task_queue, pinned(loan))
    cleanup.append(handle)
    await wait_outbox(pool, f"{handle.id}/early-sms/sms", "sent")
    attempts = femu.attempts_to(loan.phone)
    assert [a["fault"] for a in attempts] == ["rate_limit", None]
    assert attempts[1]["at"] - attempts[0]["at"] >= 4.8, attempts
    assert len(femu.messages(channel="sms", to=loan.phone)) == 1
    run = await completed_send(handle)
    assert run["attempt"] == 2
    assert "429" in run["last_failure"].message


async def test_server_errors_retry_with_backoff_and_send_once(
    dev_env: WorkflowEnvironment, fworker: Worker, femu: RecordingEmulator, pool: asyncpg.Pool,
    loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    loan = case_loan(loan_id, days_ago=1)
    femu.add_fault(loan.phone, "server_error", channel="sms", times=2)
    handle = await start_case(dev_env.client, loan, fworker.task_queue, pinned(loan))
    cleanup.append(handle)
    await wait_outbox(pool, f"{handle.id}/early-sms/sms", "sent")
    attempts = femu.attempts_to(loan.phone)
    assert [a["fault"] for a in attempts] == ["server_error", "server_error", None]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    # SEND_RETRY: 2 s, then twice that (the dev server's timers may fire up to ~1 s late).
    assert gaps[0] >= 1.8 and gaps[1] >= 3.6, gaps
    assert len(femu.messages(channel="sms", to=loan.phone)) == 1
    assert (await completed_send(handle))["attempt"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("channel", ["sms", "email"])
async def test_connection_refused_is_retried(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, loan_id: str, cleanup: list[WorkflowHandle],
    channel: str,
) -> None:
    """Nothing listens at the provider's address at first: the attempt fails before any request
    left, the claim is released ("retry"), and once the provider is up the message goes out once."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    queue = f"refused-{uuid.uuid4().hex[:8]}"
    emu = RecordingEmulator()
    async with running_worker(dev_env.client, pool, fault_providers(url), task_queue=queue):
        loan = case_loan(loan_id, days_ago=1 if channel == "sms" else 14)
        step = "early-sms" if channel == "sms" else "formal-notice"
        handle = await start_case(dev_env.client, loan, queue, pinned(loan))
        cleanup.append(handle)
        key = f"{handle.id}/{step}/{channel}"
        row = await wait_outbox(pool, key, "retry")
        assert row["error"] == "connect_failed", row["error"]
        await emu.start(port=port)
        try:
            await wait_outbox(pool, key, "sent")
            to = loan.phone if channel == "sms" else loan.email
            assert len(emu.messages(channel=channel, to=to)) == 1
            run = await completed_send(handle, SEND_SMS if channel == "sms" else SEND_EMAIL)
            assert run["attempt"] >= 2 and not (await send_result(dev_env.client, run)).reused
        finally:
            await emu.stop()


async def test_invalid_number_is_final_and_falls_back_to_email(
    dev_env: WorkflowEnvironment, fworker: Worker, femu: RecordingEmulator, pool: asyncpg.Pool,
    loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    """Twilio 21211 is not retried; the failure is recorded; the SMS-only step goes by e-mail."""
    loan = case_loan(loan_id, days_ago=1)
    femu.add_fault(loan.phone, "invalid_number", channel="sms")
    handle = await start_case(dev_env.client, loan, fworker.task_queue, pinned(loan))
    cleanup.append(handle)
    sms_key = f"{handle.id}/early-sms/sms"
    email_key = f"{handle.id}/early-sms-fallback/email"

    failed = await wait_outbox(pool, sms_key, "failed")
    assert failed["error"] == "twilio_21211"
    await wait_outbox(pool, email_key, "sent")
    assert len(femu.attempts_to(loan.phone)) == 1  # not retried
    assert femu.messages(channel="sms", to=loan.phone) == []
    emails = femu.messages(channel="email", to=loan.email)
    assert len(emails) == 1 and loan.loan_id in emails[0]["body"]
    assert emails[0]["custom_args"]["outbox_key"] == email_key

    rows = await eventually(
        lambda: pool.fetch("SELECT idempotency_key, channel, decision, outcome FROM contacts "
                           "WHERE loan_id = $1 ORDER BY id", loan.loan_id),
        lambda rs: {r["idempotency_key"]: r["outcome"] for r in rs}.get(email_key) == "sent"
        and {r["idempotency_key"]: r["outcome"] for r in rs}.get(sms_key) == "failed")
    by_key = {r["idempotency_key"]: r for r in rows}
    assert by_key[sms_key]["outcome"] == "failed"
    assert by_key[email_key]["decision"] == "sent"
    kinds = await eventually(
        lambda: pool.fetch("SELECT kind, summary FROM events WHERE loan_id = $1", loan.loan_id),
        lambda rs: any(r["kind"] == "contact_failed" for r in rs))
    assert any("twilio_21211" in r["summary"] for r in kinds if r["kind"] == "contact_failed")
    run = (await activity_runs(handle, SEND_SMS))[0]
    assert run["attempt"] == 1 and (await send_result(dev_env.client, run)).status == "failed"


async def test_rejected_email_is_recorded_as_failed(
    dev_env: WorkflowEnvironment, fworker: Worker, femu: RecordingEmulator, pool: asyncpg.Pool,
    loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    """SendGrid 400 on the e-mail-only formal notice: recorded as failed, not retried, and the
    case carries on (it used to fall back to an SMS version of the notice that does not exist,
    which failed the whole workflow)."""
    loan = case_loan(loan_id, days_ago=14)
    femu.add_fault(loan.email, "rejected", channel="email")
    handle = await start_case(dev_env.client, loan, fworker.task_queue, pinned(loan))
    cleanup.append(handle)
    key = f"{handle.id}/formal-notice/email"
    failed = await wait_outbox(pool, key, "failed")
    assert failed["error"] == "sendgrid_400"
    await eventually(lambda: pool.fetchval(
                         "SELECT outcome FROM contacts WHERE idempotency_key = $1", key),
                     lambda o: o == "failed")
    assert len(femu.attempts_to(loan.email)) == 1
    assert femu.messages(to=loan.email) == [] and femu.messages(to=loan.phone) == []
    await asyncio.sleep(1.0)  # give a (wrong) fallback the chance to run
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    status = await handle.query(CollectionWorkflow.status)
    assert status.state == CaseState.ACTIVE and status.stage.value == "middle"
    assert femu.messages(to=loan.phone) == []


class ResettingProxy:
    """Between the worker and the provider: the next `resets` sends reach the provider (which
    takes the message), then the worker's connection is reset before any answer, as a load
    balancer or a flaky network would do. Everything else is passed through."""

    def __init__(self, upstream: str, resets: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.resets = resets
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> ResettingProxy:
        self._session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=body, headers=headers) as resp:
            payload, status = await resp.read(), resp.status
            out = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
        if request.method == "POST" and self.resets > 0 and status < 300:
            self.resets -= 1
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            transport.abort()
        return web.Response(status=status, body=payload, headers=out)


@pytest.mark.parametrize("channel", ["sms", "email"])
async def test_connection_reset_after_the_provider_took_the_message(
    dev_env: WorkflowEnvironment, femu: RecordingEmulator, pool: asyncpg.Pool, loan_id: str,
    cleanup: list[WorkflowHandle], channel: str,
) -> None:
    """The request reached the provider, then the connection was reset: the worker cannot tell
    whether the message went out, so the retry must reconcile, not resend."""
    queue = f"reset-{uuid.uuid4().hex[:8]}"
    async with ResettingProxy(femu.url) as proxy, \
            running_worker(dev_env.client, pool, fault_providers(proxy.url), task_queue=queue):
        loan = case_loan(loan_id, days_ago=1 if channel == "sms" else 14)
        step = "early-sms" if channel == "sms" else "formal-notice"
        handle = await start_case(dev_env.client, loan, queue, pinned(loan))
        cleanup.append(handle)
        row = await wait_outbox(pool, f"{handle.id}/{step}/{channel}", "sent")
        assert proxy.resets == 0
        to = loan.phone if channel == "sms" else loan.email
        sent = femu.messages(channel=channel, to=to)
        assert len(sent) == 1, [m["id"] for m in sent]
        run = await completed_send(handle, SEND_SMS if channel == "sms" else SEND_EMAIL)
        assert run["attempt"] >= 2 and (await send_result(dev_env.client, run)).reused
        assert row["provider_id"] == sent[0]["id"]
