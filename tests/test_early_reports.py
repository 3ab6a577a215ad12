"""A provider's status report that arrives before the send has recorded the provider's message id
(or before a notice's contact row exists) is kept, and linked once the contact row is written as
sent: applied to the contact and, for a message not delivered, told to the case. Whichever comes
first, once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.channels.outbox import Outbox
from activities.channels.sms import TwilioSms, twilio_client
from activities.database.contacts import ContactActivities
from activities.templates import LinkBuilder
from contracts.activity_io import ContactRecord, SendInput
from contracts.names import workflow_id_for
from infra import webhook_keys
from infra.emulator import ProviderEmulator
from infra.emulator.server import WebhookTargets
from infra.settings import Settings
from service.provider_events import StatusCallback, apply_sendgrid_events, apply_twilio_status
from tests.helpers import Stack, eventually, open_case, running_emulator
from worker import emulator_providers
from workflows.collection_workflow import CollectionWorkflow

CONTEXT = {"lender": "Demo Lender", "borrower_name": "Li", "loan_ref": "L-EARLY",
           "amount": "1.00", "currency": "CNY", "days_overdue": 1, "due_date": "2026-01-01",
           "days_before_due": 0, "opt_out": False, "validation_notice": False}


def _phone() -> str:
    return "+86139" + str(uuid.uuid4().int)[:8]


def _sent(key: str, loan_id: str, channel: str = "sms", step_id: str = "early-sms"
          ) -> ContactRecord:
    """The row a case writes once its message has gone out."""
    return ContactRecord(key=key, loan_id=loan_id, borrower_key=f"b:{loan_id}",
                         contact_key=f"p:{loan_id}", channel=channel, step_id=step_id,
                         stage="early", decision="sent", at=datetime.now(UTC),
                         template="early_reminder", outcome="sent")


async def _record(pool: asyncpg.Pool, rec: ContactRecord, client: Any = None) -> None:
    """`record_contact` as the worker runs it (with a client: its signals reach the case)."""
    await ActivityEnvironment(client=client).run(ContactActivities(pool).record_contact, rec)


async def _events(pool: asyncpg.Pool, provider_id: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT kind, outbox_key, loan_id FROM provider_events "
                            "WHERE provider_id = $1 ORDER BY id", provider_id)


async def _delivery(pool: asyncpg.Pool, key: str) -> tuple[str | None, str | None]:
    row = await pool.fetchrow("SELECT delivery_status, delivery_error FROM contacts "
                              "WHERE idempotency_key = $1", key)
    return (row["delivery_status"], row["delivery_error"]) if row else (None, None)


# ------------------------------------------------- the emulator calling back before it answers


@pytest.fixture(scope="module")
async def hooked() -> AsyncIterator[tuple[ProviderEmulator, list[StatusCallback]]]:
    """An emulator of its own whose Twilio status callbacks go to a receiver here, which applies
    them as the API's webhook does (the signature is the API's business, tested there)."""
    received: list[StatusCallback] = []
    state: dict[str, asyncpg.Pool] = {}

    async def status(request: web.Request) -> web.Response:
        form = await request.post()
        cb = StatusCallback(str(form["MessageSid"]), str(form["MessageStatus"]),
                            str(form.get("ErrorCode", "")) or None, str(form.get("To", "")))
        received.append(cb)
        await apply_twilio_status(state["pool"], cb)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with running_emulator() as emu:
        emu.configure_webhooks(WebhookTargets(f"http://127.0.0.1:{port}", "token",
                                              webhook_keys.generate().private_pem,
                                              delay_seconds=0.1))
        emu.state = state  # type: ignore[attr-defined]
        try:
            yield emu, received
        finally:
            await runner.cleanup()


async def _send_slowly(emu: ProviderEmulator, pool: asyncpg.Pool, phone: str,
                       key: str) -> str:
    """One SMS through the adapter and the outbox, the provider answering 1.5 s after it took
    the message (its callbacks come after 0.1 s): returns the SID the outbox recorded."""
    emu.add_fault(phone, "slow", channel="sms", times=1, delay=1.5)
    providers = emulator_providers(emu.url, Settings(provider_timeout_seconds=10))
    sms = TwilioSms(twilio_client(providers.twilio_sid, providers.twilio_token,
                                  providers.twilio_base_url), providers.twilio_from)
    inp = SendInput(outbox_key=key, loan_id="L-EARLY", channel="sms", to=phone,
                    template="early_reminder", locale="en", context=CONTEXT)
    try:
        result = await sms.send(inp, Outbox(pool), LinkBuilder(providers.payment_link_base))
    finally:
        await sms.close()
    assert result.status == "sent" and result.provider_id
    return result.provider_id


async def test_reports_that_overtake_the_send_are_linked_when_its_row_is_written(
    hooked: tuple[ProviderEmulator, list[StatusCallback]], pool: asyncpg.Pool,
) -> None:
    emu, received = hooked
    emu.state["pool"] = pool  # type: ignore[attr-defined]
    phone, loan = _phone(), f"L{uuid.uuid4().hex[:8]}"
    key = f"{workflow_id_for(loan)}/early-sms/sms"
    sid = await _send_slowly(emu, pool, phone, key)

    # Both callbacks came while the send was still waiting for its answer: kept, unlinked.
    assert [cb.status for cb in received if cb.message_sid == sid] == ["sent", "delivered"]
    assert [(e["kind"], e["loan_id"]) for e in await _events(pool, sid)] == [
        ("sent", None), ("delivered", None)]

    await _record(pool, _sent(key, loan))
    assert [(e["kind"], e["outbox_key"], e["loan_id"]) for e in await _events(pool, sid)] == [
        ("sent", key, loan), ("delivered", key, loan)]
    assert await _delivery(pool, key) == ("delivered", None)

    # Idempotent: the row written again, a callback repeated: nothing changes.
    await _record(pool, _sent(key, loan))
    again = await apply_twilio_status(pool, StatusCallback(sid, "delivered", None, phone))
    assert (again.applied, again.duplicates) == (0, 1)
    assert len(await _events(pool, sid)) == 2
    assert await _delivery(pool, key) == ("delivered", None)


async def test_a_report_after_the_row_is_applied_at_once(pool: asyncpg.Pool) -> None:
    """The usual order, unchanged: the row first, then the report, applied as it comes."""
    loan, sid = f"L{uuid.uuid4().hex[:8]}", f"SM{uuid.uuid4().hex}"
    key = f"{workflow_id_for(loan)}/early-sms/sms"
    await pool.execute("INSERT INTO outbox (outbox_key, channel, status, body_sha256, claimed_at, "
                       "provider_id) VALUES ($1, 'sms', 'sent', 'h', now(), $2)", key, sid)
    await _record(pool, _sent(key, loan))
    applied = await apply_twilio_status(pool, StatusCallback(sid, "delivered", None, _phone()))
    assert applied.applied == 1
    assert await _delivery(pool, key) == ("delivered", None)


async def test_reports_and_rows_racing_are_each_linked_once(pool: asyncpg.Pool) -> None:
    """Twenty messages whose report and contact row are written at the same moment: every report
    ends on its contact, whichever transaction came first."""
    loans = [f"L{uuid.uuid4().hex[:8]}" for _ in range(20)]
    sids = {loan: f"SM{uuid.uuid4().hex}" for loan in loans}
    keys = {loan: f"{workflow_id_for(loan)}/early-sms/sms" for loan in loans}
    for loan in loans:  # the send has recorded its SID; the contact row is not written yet
        await pool.execute(
            "INSERT INTO outbox (outbox_key, channel, status, body_sha256, claimed_at, "
            "provider_id) VALUES ($1, 'sms', 'sent', 'h', now(), $2)", keys[loan], sids[loan])
    await asyncio.gather(*(
        job for loan in loans for job in (
            apply_twilio_status(pool, StatusCallback(sids[loan], "delivered", None, _phone())),
            _record(pool, _sent(keys[loan], loan)))))
    for loan in loans:
        assert await _delivery(pool, keys[loan]) == ("delivered", None)
        assert [(e["outbox_key"], e["loan_id"]) for e in await _events(pool, sids[loan])] == [
            (keys[loan], loan)]


async def test_an_early_bounce_of_a_notice_is_linked_to_its_row(pool: asyncpg.Pool) -> None:
    """A notice's row is written after its send: SendGrid's bounce came first, by outbox key."""
    loan = f"L{uuid.uuid4().hex[:8]}"
    key = f"{workflow_id_for(loan)}/payment_receipt-3/email"
    event = {"event": "bounce", "type": "bounce", "status": "5.1.1", "outbox_key": key,
             "sg_event_id": uuid.uuid4().hex, "sg_message_id": f"sg-{uuid.uuid4().hex}",
             "email": f"{loan}@example.com", "timestamp": int(datetime.now(UTC).timestamp())}
    await apply_sendgrid_events(pool, [event])
    stored = await pool.fetchrow("SELECT outbox_key, loan_id FROM provider_events "
                                 "WHERE event_key = $1", event["sg_event_id"])
    assert (stored["outbox_key"], stored["loan_id"]) == (key, None)
    await _record(pool, _sent(key, loan, channel="email", step_id="payment_receipt-3"))
    assert await _delivery(pool, key) == ("bounced", "sendgrid_bounce")
    assert await pool.fetchval("SELECT loan_id FROM provider_events WHERE event_key = $1",
                               event["sg_event_id"]) == loan


# ------------------------------------------------------------------ the case told of a failure


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


async def test_an_early_failure_is_told_to_the_case_when_linked(stack: Stack,
                                                                loan_id: str) -> None:
    """The case's first SMS is sent; Twilio's "undelivered, unknown handset" had come before the
    outbox knew its SID. Linked when the row is written, the case is told: the number is
    unusable for SMS and the step falls back to e-mail."""
    case = await open_case(stack, loan_id, due_in=-1, first_message=True)
    key = f"{case.handle.id}/early-sms/sms"
    await eventually(lambda: _delivery(stack.pool, key), lambda d: d is not None)
    sid = f"SM{uuid.uuid4().hex}"
    early = await apply_twilio_status(
        stack.pool, StatusCallback(sid, "undelivered", "30005", case.loan.phone))
    assert early.applied == 1 and not early.reports  # nothing to link it to yet
    # The send records the provider's id for its message (as if its answer came only now) ...
    await stack.pool.execute("UPDATE outbox SET provider_id = $2 WHERE outbox_key = $1", key, sid)
    # ... and the case writes its row as sent, in its activity: the report is linked and told.
    await _record(stack.pool, _sent(key, loan_id), client=stack.env.client)
    assert await _delivery(stack.pool, key) == ("undelivered", "twilio_30005")

    async def failed() -> list[Any]:
        return [e for e in await case.handle.query(CollectionWorkflow.timeline)
                if e.kind == "delivery_failed"]

    [told] = await eventually(failed, bool)
    assert told.detail["address_unusable"] is True and told.detail["outbox_key"] == key
    await case.finish()
