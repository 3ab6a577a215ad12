"""Borrower data stays out of Temporal's history and out of the logs.

A real case (reminders, a rate-limited SMS retried, a payment, receipts) runs with a client and
worker whose data converter encrypts payloads (`EncryptionCodec`). The history is then fetched by a
client WITHOUT the codec, as an operator with server access (or the server's database) would see
it: the borrower's phone number, e-mail address and name appear nowhere, neither in the JSON nor
in the raw bytes of any payload (`to_json` base64-encodes payload data, so the payloads are walked
and checked as bytes too). The logs of the run, with `infra.log_masking.install()`, carry no phone
number or e-mail address either.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from contracts.messages import CaseState, PaymentInput
from infra import log_masking
from infra.codec import (
    ENCODING_ENCRYPTED,
    EncryptionCodec,
    data_converter,
    generate_key,
    parse_keys,
)
from infra.emulator import ProviderEmulator
from tests.helpers import make_loan, start_case, today_of
from worker import running_worker
from workflows.collection_workflow import CollectionWorkflow


def _is_map(field: FieldDescriptor) -> bool:
    """A map field: its message type is a generated map entry (a message field always has one)."""
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def payloads(msg: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere in a proto message (fields, repeated fields, maps)."""
    if isinstance(msg, Payload):
        yield path, msg
        return
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        name = f"{path}.{field.name}"
        if _is_map(field):
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from payloads(item, f"{name}[{key}]")
        elif field.is_repeated:
            for i, item in enumerate(value):
                yield from payloads(item, f"{name}[{i}]")
        else:
            yield from payloads(value, name)


def failures(msg: Message, path: str = "") -> Iterator[tuple[str, Failure]]:
    """Every Failure anywhere in a proto message (the causes included)."""
    if isinstance(msg, Failure):
        yield path, msg
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE or _is_map(field):
            continue
        for i, item in enumerate(value if field.is_repeated else [value]):
            yield from failures(item, f"{path}.{field.name}[{i}]")


def variants(secret: str) -> list[bytes]:
    """The secret as it could sit in bytes: UTF-8, JSON-escaped, base64 at any alignment."""
    raw = secret.encode()
    found = {raw, raw.lower(), secret.encode("unicode_escape")}
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0:-4]
        if len(enc) >= 8:
            found.add(enc)
    return list(found)


@pytest.fixture
def codec_client(ts_env: WorkflowEnvironment) -> Client:
    """A client on the test server's connection (keeping its time-skipping interceptor) whose
    payloads are encrypted."""
    keys = parse_keys(generate_key())
    config = ts_env.client.config()
    config["data_converter"] = data_converter(EncryptionCodec(keys, next(iter(keys))))
    return Client(**config)


async def test_history_and_logs_hold_no_borrower_data(
    ts_env: WorkflowEnvironment, codec_client: Client, pool: asyncpg.Pool,
    emulator: ProviderEmulator, providers: Providers, loan_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    loan = make_loan(loan_id, due=today_of(await ts_env.get_current_time()) + timedelta(days=5),
                     borrower_name=f"Wilhelmina Qiaoxue{suffix}",
                     email=f"wilhelmina.{suffix}@borrower-mail.example")
    secrets = {"phone": loan.phone, "phone digits": loan.phone.lstrip("+"), "email": loan.email,
               "name": loan.borrower_name}

    masking = log_masking.install()
    caplog.set_level(logging.DEBUG)
    try:
        async with running_worker(codec_client, pool, providers,
                                  task_queue=f"privacy-{uuid.uuid4().hex[:8]}") as worker:
            emulator.add_fault(loan.phone, "rate_limit", channel="sms", times=1, retry_after=1)
            handle = await start_case(codec_client, loan, worker.task_queue)  # policy by activity
            await ts_env.sleep(timedelta(days=3))  # the pre-due reminders
            await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", Decimal("1200.00"),
                    "CNY"))
            result = await handle.result()
            assert result.state == CaseState.PAID
            assert (await handle.query(CollectionWorkflow.status)).state == CaseState.PAID
        # A line that does carry borrower data comes out masked.
        logging.getLogger("activities.sms").warning("could not reach %s or %s", loan.phone,
                loan.email)
    finally:
        log_masking.uninstall()
    assert masking.mask(loan.phone) == log_masking.PHONE_MASK

    # The data really went through Temporal: the borrower got the reminders and the receipts.
    assert len(emulator.messages(to=loan.phone)) >= 2 and len(emulator.messages(to=loan.email)) >= 2
    assert any(loan.borrower_name in (m["body"] or "") for m in emulator.messages(to=loan.email))

    # What the server stores, read without the codec.
    history = await ts_env.client.get_workflow_handle(handle.id).fetch_history()
    text = history.to_json()
    for what, secret in secrets.items():
        assert secret not in text, f"{what} in the history JSON"
    seen = 0
    for event in history.events:
        for path, payload in payloads(event):
            seen += 1
            blobs = [payload.data, *payload.metadata.values()]
            for what, secret in secrets.items():
                for form in variants(secret):
                    assert not any(
                        form in blob for blob in blobs), f"{what} in {event.event_type}{path}"
            # Search attributes are indexed for the server's queries, by design; the SDK core writes
            # its own marker metadata (the patch id; a local activity's type, attempt and times)
            # as plain JSON, and the loop above shows no borrower data is in it.
            core_metadata = re.search(
                    r"marker_recorded_event_attributes\.details\[(patch-data|data)\]", path)
            if ".search_attributes" not in path and not core_metadata:
                assert payload.metadata.get("encoding") == ENCODING_ENCRYPTED, (
                    f"unencrypted payload at {event.event_type}{path}")
    assert seen > 20
    # Failures (the 429) are encoded too: their messages could quote what a handler was given.
    # The 429 was retried (the test server keeps no last_failure on the started event; where a
    # failure is stored, its message and stack are encoded like payloads).
    assert any(e.activity_task_started_event_attributes.attempt == 2 for e in history.events
               if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    for event in history.events:
        for path, failure in failures(event):
            where = f"{event.event_type}{path}"
            assert failure.message == "Encoded failure", f"{where}: {failure.message}"

    # The logs of the run.
    assert caplog.records
    for record in caplog.records:
        message = record.getMessage() + (record.exc_text or "")
        for what, secret in secrets.items():  # the name too: no secret is registered for it
            assert secret not in message, f"{what} in log {record.name}: {message}"
        assert providers.sendgrid_key not in message and providers.twilio_token not in message
    masked = [r.getMessage() for r in caplog.records if r.name == "activities.sms"]
    assert masked == [f"could not reach {log_masking.PHONE_MASK} or {log_masking.EMAIL_MASK}"]
