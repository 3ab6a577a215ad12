"""The providers' webhooks over real HTTP to the running API: the emulator calls them signed as
Twilio and SendGrid do (status callbacks for every message, a borrower replying STOP, 退订 or
START, an address bouncing), and calls a test makes itself (tampered, stale, duplicated).

Cases run under the `demo` policy (a policy day lasts 3 s): the pre-due SMS and e-mail go out
within seconds, the next SMS (`early-sms`) a policy day after the due date."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from contracts.contact_keys import email_key, phone_key
from infra.emulator import ProviderEmulator
from infra.emulator import twilio as twilio_emulator
from infra.emulator.server import WebhookTargets
from infra.webhook_keys import WebhookKeyPair, local_key_pair
from service.provider_events import CONFIRM_OPT_IN, CONFIRM_OPT_OUT, CONFIRM_OPT_OUT_ZH
from tests.api.calls import Api, idem, loan_body, new_id
from tests.helpers import eventually
from workflows.contacts import UNUSABLE_ADDRESS_RULE

STEP_WAIT = 45.0  # a few policy days of 3 s, on a loaded 2-core machine


@pytest.fixture(scope="module")
async def hooks(api: Api, emulator: ProviderEmulator,
                state_dir: Path) -> AsyncIterator[WebhookKeyPair]:
    """The emulator calls the API's webhooks while this module runs, with the secrets the API
    was configured with: the emulator's auth token, the key pair in the API's STATE_DIR."""
    pair = local_key_pair(state_dir / "api-state")
    emulator.configure_webhooks(WebhookTargets(api.url, twilio_emulator.AUTH_TOKEN,
                                               pair.private_pem, delay_seconds=0.2))
    try:
        yield pair
    finally:
        emulator.configure_webhooks(None)


def a_phone() -> str:
    return "+86139" + "".join(random.choices("0123456789", k=8))


async def start(http: httpx.AsyncClient, api: Api, loan_id: str, phone: str) -> None:
    due = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    body = loan_body(loan_id, phone=phone, policy="demo", due_date=due, locale="en")
    started = await http.post("/v1/cases", json=body, headers=api.auth("loan-system") | idem())
    assert started.status_code == 200, started.text


async def start_until(api: Api, pool: asyncpg.Pool, loan_id: str, phone: str, channel: str,
                      delivery_status: str) -> None:
    """Start the loan's case; return once a `channel` contact of it has `delivery_status`."""
    async with api.http() as http:
        await start(http, api, loan_id, phone)
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: any(r["channel"] == channel
                                      and r["delivery_status"] == delivery_status for r in rows),
                     timeout=STEP_WAIT)


def texts_to(emulator: ProviderEmulator, phone: str) -> list[dict[str, Any]]:
    """The case's SMS to `phone` (not the TwiML answers to the borrower's replies)."""
    return [m for m in emulator.messages("sms", to=phone) if not m.get("reply_to")]


async def contacts(pool: asyncpg.Pool, *loan_ids: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT loan_id, channel, step_id, decision, rule, delivery_status, delivery_error "
        "FROM contacts WHERE loan_id = ANY($1::text[]) ORDER BY id", list(loan_ids))


async def active(pool: asyncpg.Pool, key: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT channel, kind, rule FROM contact_suppressions "
                            "WHERE contact_key = $1 AND lifted_at IS NULL", key)
    return [(r["channel"], r["kind"], r["rule"]) for r in rows]


def refused(rows: list[asyncpg.Record], loan_id: str, channel: str, rule: str) -> bool:
    return any(r["loan_id"] == loan_id and r["channel"] == channel and r["rule"] == rule
               and r["decision"] != "sent" for r in rows)


def stopped(rows: list[asyncpg.Record], loan_id: str, channel: str, rule: str) -> bool:
    """Refused with the suppression's rule at reservation, or skipped before it because the
    `delivery_failed` signal already told the case the address is unusable."""
    return refused(rows, loan_id, channel, rule) or refused(rows, loan_id, channel,
                                                            UNUSABLE_ADDRESS_RULE)


# --------------------------------------------------------------------------- through the emulator


async def test_stop_stops_sms_on_all_loans_and_start_resumes_it(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, first, second = a_phone(), new_id(), new_id()
    async with api.http() as http:
        await start(http, api, first, phone)
        await start(http, api, second, phone)
        # The pre-due SMS of each loan, and Twilio's callbacks marking both delivered.
        await eventually(lambda: contacts(pool, first, second),
                         lambda rows: sum(r["channel"] == "sms" and r["delivery_status"] ==
                                          "delivered" for r in rows) == 2, timeout=STEP_WAIT)
    sent_before = len(texts_to(emulator, phone))
    assert sent_before == 2

    stop = await emulator.twilio.inbound(phone, "stop")
    assert (stop["status"], stop["replies"]) == (200, [CONFIRM_OPT_OUT])
    again = await emulator.twilio.inbound(phone, "STOP")
    assert again["replies"] == []  # one confirmation per opt-out
    assert await active(pool, phone_key(phone)) == [("sms", "opt_out", "tcpa.opt_out")]
    reply = await pool.fetchrow("SELECT loan_ids, kind, body_cipher FROM inbound_replies "
                                "WHERE message_sid = $1", stop["message_sid"])
    assert reply is not None
    assert (sorted(reply["loan_ids"]), reply["kind"], reply["body_cipher"]) == (
        sorted([first, second]), "opt_out", None)

    # The next SMS of each loan is refused at reservation with the opt-out rule; none goes out.
    await eventually(lambda: contacts(pool, first, second),
                     lambda rows: refused(rows, first, "sms", "tcpa.opt_out")
                     and refused(rows, second, "sms", "tcpa.opt_out"), timeout=STEP_WAIT)
    assert len(texts_to(emulator, phone)) == sent_before

    start_again = await emulator.twilio.inbound(phone, "START")
    assert start_again["replies"] == [CONFIRM_OPT_IN]
    assert await active(pool, phone_key(phone)) == []
    # The refused SMS is tried again a policy day later, and goes out for both loans.
    await eventually(lambda: _count(texts_to(emulator, phone)),
                     lambda n: n >= sent_before + 2, timeout=STEP_WAIT)


async def _count(items: list[Any]) -> int:
    return len(items)


async def test_tuiding_opts_out_with_a_chinese_confirmation(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, loan_id = a_phone(), new_id()
    await start_until(api, pool, loan_id, phone, "sms", "delivered")
    sent_before = len(texts_to(emulator, phone))
    answer = await emulator.twilio.inbound(phone, " 退订 ")
    assert answer["replies"] == [CONFIRM_OPT_OUT_ZH]
    assert await active(pool, phone_key(phone)) == [("sms", "opt_out", "cn.miit.sms_unsubscribe")]
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: refused(rows, loan_id, "sms", "cn.miit.sms_unsubscribe"),
                     timeout=STEP_WAIT)
    assert len(texts_to(emulator, phone)) == sent_before


async def test_a_hard_bounce_stops_email_to_that_address(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, loan_id = a_phone(), new_id()
    address = f"{loan_id.lower()}@example.com"
    await start_until(api, pool, loan_id, phone, "email", "delivered")
    assert await emulator.sendgrid.play(address, "bounce") == 200
    assert await active(pool, email_key(address)) == [("email", "bounce", "email.suppressed")]
    rows = await contacts(pool, loan_id)
    assert [r["delivery_status"] for r in rows if r["channel"] == "email"] == ["bounced"]
    mails = len(emulator.messages("email", to=address))
    # The next e-mail step (early-email) is refused; nothing more is sent there.
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: stopped(rows, loan_id, "email", "email.suppressed"),
                     timeout=STEP_WAIT)
    assert len(emulator.messages("email", to=address)) == mails


async def test_an_undeliverable_number_is_recorded_and_sms_stops(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, loan_id = a_phone(), new_id()
    emulator.twilio.undeliverable(phone, 30006)  # a landline
    await start_until(api, pool, loan_id, phone, "sms", "undelivered")
    rows = await contacts(pool, loan_id)
    assert [r["delivery_error"] for r in rows if r["channel"] == "sms"] == ["twilio_30006"]
    assert await active(pool, phone_key(phone)) == [("sms", "undeliverable", "sms.undeliverable")]
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: stopped(rows, loan_id, "sms", "sms.undeliverable"),
                     timeout=STEP_WAIT)


# ------------------------------------------------------------------------ calls the test makes


def twilio_signed(url: str, params: dict[str, str]) -> dict[str, str]:
    signature = RequestValidator(twilio_emulator.AUTH_TOKEN).compute_signature(url, params)
    return {"X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}


def sendgrid_signed(pair: WebhookKeyPair, body: str, stamp: int | None = None) -> dict[str, str]:
    ts = str(stamp if stamp is not None else int(time.time()))
    signature = pair.private_key.sign((ts + body).encode(), ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts, "Content-Type": "application/json"}


async def _rows(pool: asyncpg.Pool, sids: list[str], event_ids: list[str],
                keys: list[str]) -> tuple[int, int, int]:
    """The rows these calls could have written (the cases of the tests before this one still
    run, and their own callbacks keep adding rows of their own meanwhile)."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM provider_events WHERE provider_id = ANY($1::text[]) "
        "OR event_key = ANY($2::text[])) AS e, "
        "(SELECT count(*) FROM contact_suppressions WHERE contact_key = ANY($3::text[])) AS s, "
        "(SELECT count(*) FROM inbound_replies WHERE message_sid = ANY($1::text[])) AS r",
        sids, event_ids, keys)
    assert row is not None
    return row["e"], row["s"], row["r"]


async def test_unsigned_tampered_and_stale_calls_are_refused_with_nothing_changed(
        api: Api, pool: asyncpg.Pool, hooks: WebhookKeyPair) -> None:
    status_url = f"{api.url}/webhooks/twilio/status"
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "undelivered",
              "ErrorCode": "30006", "To": a_phone()}
    event = [{"email": "nobody@example.com", "event": "spamreport", "timestamp": int(time.time()),
              "sg_event_id": new_id()}]
    stop = {"MessageSid": "SM" + "b" * 32, "From": a_phone(), "Body": "STOP"}
    mine = ([params["MessageSid"], stop["MessageSid"]], [str(event[0]["sg_event_id"])],
            [phone_key(params["To"]), phone_key(stop["From"]), email_key("nobody@example.com")])
    before = await _rows(pool, *mine)
    body = json.dumps(event) + "\r\n"
    async with httpx.AsyncClient(timeout=30) as http:
        unsigned = await http.post(status_url, content=urlencode(params), headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        headers = twilio_signed(status_url, params)
        tampered = await http.post(status_url, content=urlencode({**params, "ErrorCode": "30003"}),
                                   headers=headers)
        inbound_url = f"{api.url}/webhooks/twilio/inbound"
        other_url = await http.post(inbound_url, content=urlencode(stop),
                                    headers=twilio_signed(status_url, stop))
        sg_unsigned = await http.post(f"{api.url}/webhooks/sendgrid/events", content=body)
        sg_tampered = await http.post(f"{api.url}/webhooks/sendgrid/events",
                                      content=body.replace("spamreport", "delivered"),
                                      headers=sendgrid_signed(hooks, body))
        sg_stale = await http.post(f"{api.url}/webhooks/sendgrid/events", content=body,
                                   headers=sendgrid_signed(hooks, body, int(time.time()) - 600))
    answers = [(r.status_code, r.json()["kind"]) for r in
               (unsigned, tampered, other_url, sg_unsigned, sg_tampered, sg_stale)]
    assert answers == [(401, "webhook_unsigned"), (403, "webhook_signature"),
                       (403, "webhook_signature"), (401, "webhook_unsigned"),
                       (403, "webhook_signature"), (403, "webhook_stale")]
    assert all(r.headers["content-type"] == "application/problem+json"
               for r in (unsigned, tampered, sg_stale))
    assert await _rows(pool, *mine) == before
    # No address in any answer.
    assert params["To"] not in " ".join(r.text for r in (unsigned, tampered))


async def test_duplicated_sendgrid_events_are_applied_once(
        api: Api, pool: asyncpg.Pool, hooks: WebhookKeyPair) -> None:
    address = f"{new_id().lower()}@example.com"
    event = {"email": address, "event": "unsubscribe", "timestamp": int(time.time()),
             "sg_event_id": new_id(), "outbox_key": "collection-none/step/email"}
    body = json.dumps([event, event]) + "\r\n"
    url = f"{api.url}/webhooks/sendgrid/events"
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(url, content=body, headers=sendgrid_signed(hooks, body))
        second = await http.post(url, content=body, headers=sendgrid_signed(hooks, body))
    assert first.json() == {"applied": 1, "duplicates": 1}
    assert second.json() == {"applied": 0, "duplicates": 2}
    assert await pool.fetchval("SELECT count(*) FROM provider_events WHERE event_key = $1",
                               event["sg_event_id"]) == 1
    assert await active(pool, email_key(address)) == [("email", "unsubscribe", "email.suppressed")]
    # The address itself is stored nowhere.
    for table in ("provider_events", "contact_suppressions"):
        dump = await pool.fetchval(f"SELECT string_agg(t::text, ' ') FROM {table} t")
        assert address not in (dump or "")


# ------------------------------------------------ the workflow's side: skipping and falling back
# A suppressed reservation skips the channel for that step and falls back (SUPPRESSED_PATCH); the
# `delivery_failed` signal marks an unusable address and sends the step's fallback once
# (DELIVERY_FAILED_PATCH, workflows/contacts.py).


async def test_email_continues_while_sms_is_opted_out(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, loan_id = a_phone(), new_id()
    await start_until(api, pool, loan_id, phone, "sms", "delivered")
    await emulator.twilio.inbound(phone, "STOP")
    # early-sms is skipped with the rule; early-email (the next policy day) still goes out.
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: any(r["step_id"] == "early-email" and r["decision"] == "sent"
                                      for r in rows), timeout=20)


async def test_an_undeliverable_sms_falls_back_to_email(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, hooks: WebhookKeyPair) -> None:
    phone, loan_id = a_phone(), new_id()
    emulator.twilio.undeliverable(phone, 30005)
    async with api.http() as http:
        await start(http, api, loan_id, phone)
    # The SMS-only early-sms step goes out by e-mail instead.
    await eventually(lambda: contacts(pool, loan_id),
                     lambda rows: any(r["step_id"] == "early-sms" and r["channel"] == "email"
                                      and r["decision"] == "sent" for r in rows), timeout=30)
