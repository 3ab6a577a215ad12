"""Twilio's voice webhooks over real HTTP to the running API, signed as Twilio signs them (the
local stack's auth token): a reminder call's status callbacks written onto its contact row once
each, the borrower's key presses (1: the agents' line, 9: no more automated calls, honoured by the
reservation on every loan of the number), and calls that are unsigned or tampered with refused
with nothing written.

The call itself is set up as the voice adapter leaves it once Twilio took it: a contact row
reserved for the attempt (outcome `pending`) and its outbox row holding the CallSid."""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from twilio.request_validator import RequestValidator

from activities.channels import voice
from activities.database.contacts import ContactActivities
from activities.policies import resolve
from contracts.activity_io import ContactRequest
from contracts.contact_keys import phone_key
from infra.emulator import twilio as twilio_emulator
from infra.settings import Settings
from service.voice_events import (
    CONFIRM_VOICE_OPT_OUT,
    CONFIRM_VOICE_OPT_OUT_ZH,
    GATHER_PATH,
    STATUS_PATH,
    VOICE_OPT_OUT_RULE,
)
from tests.api.calls import Api, new_id
from tests.helpers import make_loan
from workflows import addresses

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Call:
    loan_id: str
    phone: str
    sid: str
    key: str  # the contact row's idempotency key, the outbox key


def a_phone(country: str = "+1") -> str:
    if country == "+86":
        return "+86139" + "".join(random.choices("0123456789", k=8))
    return "+1212555" + "".join(random.choices("0123456789", k=4))


async def placed_call(pool: asyncpg.Pool, phone: str | None = None) -> Call:
    """A voice reminder Twilio accepted: reserved, sent, its CallSid in the outbox."""
    loan_id, phone = new_id(), phone or a_phone()
    call = Call(loan_id, phone, "CA" + secrets.token_hex(16),
                f"collection-{loan_id}/pre-due-voice/voice")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO contacts (idempotency_key, loan_id, borrower_key, contact_key, channel,
                step_id, stage, template, decision, rule, outcome, occurred_at)
            VALUES ($1,$2,$3,$4,'voice','pre-due-voice','pre_due','pre_due_reminder','sent',
                'us.window_and_caps','pending',now())
            """, call.key, loan_id, phone_key(phone), phone_key(phone))
        await conn.execute(
            "INSERT INTO outbox (outbox_key, channel, status, provider_id, body_sha256, "
            "claimed_at, sent_at) VALUES ($1,'voice','sent',$2,'x',now(),now())",
            call.key, call.sid)
    return call


def signed(url: str, params: dict[str, str]) -> dict[str, str]:
    signature = RequestValidator(twilio_emulator.AUTH_TOKEN).compute_signature(url, params)
    return {**FORM, "X-Twilio-Signature": signature}


async def post(api: Api, path: str, params: dict[str, str],
               headers: dict[str, str] | None = None) -> httpx.Response:
    url = api.url + path
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, content=urlencode(params),
                               headers=signed(url, params) if headers is None else headers)


def status_params(call: Call, status: str, **extra: str) -> dict[str, str]:
    return {"AccountSid": "AC" + "0" * 32, "CallSid": call.sid, "CallStatus": status,
            "From": "+15005550006", "To": call.phone, "Direction": "outbound-api", **extra}


async def contact(pool: asyncpg.Pool, call: Call) -> tuple[str | None, str | None, str | None]:
    row = await pool.fetchrow("SELECT delivery_status, delivery_error, outcome FROM contacts "
                              "WHERE idempotency_key = $1", call.key)
    assert row is not None
    return row["delivery_status"], row["delivery_error"], row["outcome"]


async def events_of(pool: asyncpg.Pool, sid: str) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT event_key, kind FROM provider_events "
                            "WHERE provider = 'twilio' AND provider_id = $1 ORDER BY id", sid)
    return [(r["event_key"], r["kind"]) for r in rows]


async def voice_suppressions(pool: asyncpg.Pool, phone: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT channel, kind, rule FROM contact_suppressions "
                            "WHERE contact_key = $1 AND lifted_at IS NULL", phone_key(phone))
    return [(r["channel"], r["kind"], r["rule"]) for r in rows]


def test_the_paths_are_the_ones_the_calls_name() -> None:
    assert (STATUS_PATH, GATHER_PATH) == (voice.STATUS_PATH, voice.GATHER_PATH)


# ------------------------------------------------------------------------------ status callback


async def test_a_status_callback_writes_the_outcome_once(api: Api, pool: asyncpg.Pool) -> None:
    call = await placed_call(pool)
    ringing = await post(api, STATUS_PATH, status_params(call, "ringing"))
    assert ringing.status_code == 204, ringing.text
    assert await contact(pool, call) == ("ringing", None, "pending")

    done = status_params(call, "completed", AnsweredBy="human", CallDuration="12")
    assert (await post(api, STATUS_PATH, done)).status_code == 204
    assert await contact(pool, call) == ("completed", None, "connected")
    # Twilio retries a callback it got no answer to: the same (CallSid, status) is applied once,
    # whatever else it says, and a late "ringing" does not move an ended call back.
    again = status_params(call, "completed", AnsweredBy="machine_start")
    assert (await post(api, STATUS_PATH, again)).status_code == 204
    late = status_params(call, "in-progress")
    assert (await post(api, STATUS_PATH, late)).status_code == 204
    assert await contact(pool, call) == ("completed", None, "connected")
    assert await events_of(pool, call.sid) == [
        (f"{call.sid}:ringing", "call_ringing"), (f"{call.sid}:completed", "call_completed"),
        (f"{call.sid}:in-progress", "call_in-progress")]


@pytest.mark.parametrize(("status", "extra", "expected"), [
    ("completed", {"AnsweredBy": "machine_end_beep"}, ("completed", None, "unanswered")),
    ("no-answer", {}, ("no-answer", None, "unanswered")),
    ("busy", {}, ("busy", None, "unanswered")),
    ("failed", {"ErrorCode": "13224"}, ("failed", "twilio_13224", "unanswered")),
])
async def test_how_a_call_ended_is_its_outcome(api: Api, pool: asyncpg.Pool, status: str,
                                               extra: dict[str, str],
                                               expected: tuple[str, str | None, str]) -> None:
    call = await placed_call(pool)
    answer = await post(api, STATUS_PATH, status_params(call, status, **extra))
    assert answer.status_code == 204, answer.text
    assert await contact(pool, call) == expected


async def test_a_call_not_ours_is_recorded_and_nothing_else(api: Api, pool: asyncpg.Pool) -> None:
    sid = "CA" + secrets.token_hex(16)
    params = {"CallSid": sid, "CallStatus": "completed", "To": a_phone()}
    assert (await post(api, STATUS_PATH, params)).status_code == 204
    assert await events_of(pool, sid) == [(f"{sid}:completed", "call_completed")]
    missing = await post(api, STATUS_PATH, {"CallSid": sid})
    assert missing.status_code == 400
    assert missing.json()["detail"] == "CallSid and CallStatus are required"


async def test_unsigned_and_tampered_callbacks_are_refused_with_nothing_written(
        api: Api, pool: asyncpg.Pool) -> None:
    call = await placed_call(pool)
    url = api.url + STATUS_PATH
    params = status_params(call, "completed", AnsweredBy="human")
    unsigned = await post(api, STATUS_PATH, params, headers=FORM)
    tampered = await post(api, STATUS_PATH, {**params, "AnsweredBy": "machine_start"},
                          headers=signed(url, params))
    other_url = await post(api, STATUS_PATH, params, headers=signed(api.url + GATHER_PATH, params))
    press = {"CallSid": call.sid, "Digits": "1", "To": call.phone, "Direction": "outbound-api"}
    gather_url = api.url + GATHER_PATH
    gather_tampered = await post(api, GATHER_PATH, {**press, "Digits": "9"},
                                 headers=signed(gather_url, press))
    answers = [(r.status_code, r.json()["kind"])
               for r in (unsigned, tampered, other_url, gather_tampered)]
    assert answers == [(401, "webhook_unsigned"), (403, "webhook_signature"),
                       (403, "webhook_signature"), (403, "webhook_signature")]
    assert await contact(pool, call) == (None, None, "pending")
    assert await events_of(pool, call.sid) == []
    assert await voice_suppressions(pool, call.phone) == []


# ------------------------------------------------------------------------------ the key press


def press(call: Call, digits: str) -> dict[str, str]:
    return {"AccountSid": "AC" + "0" * 32, "CallSid": call.sid, "CallStatus": "in-progress",
            "Digits": digits, "From": "+15005550006", "To": call.phone,
            "Direction": "outbound-api", "AnsweredBy": "human"}


def _request(loan_id: str, phone: str, channel: str) -> ContactRequest:
    loan = make_loan(loan_id, date(2026, 1, 1), phone=phone, timezone="America/New_York",
                     currency="USD", jurisdiction="US-NY")
    return ContactRequest(
        key=f"collection-{loan_id}/step-{uuid.uuid4().hex[:6]}/{channel}", loan_id=loan_id,
        borrower_key=addresses.borrower_key(loan), contact_key=addresses.contact_key(loan, channel),
        channel=channel, step_id="early-voice", stage="early", template="early_reminder",
        at=datetime(2026, 1, 5, 17, 0, tzinfo=UTC),  # noon in New York
        timezone="America/New_York", rule_pack=resolve(loan).rule_pack)


async def test_pressing_1_dials_the_agents_line(api: Api, pool: asyncpg.Pool) -> None:
    call = await placed_call(pool)
    answer = await post(api, GATHER_PATH, press(call, "1"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    agents = Settings().voice_agent_number
    assert f"<Dial>{agents}</Dial>" in answer.text and answer.text.endswith(
        "<Hangup /></Response>")
    assert await voice_suppressions(pool, call.phone) == []
    kinds = await pool.fetch("SELECT kind FROM events WHERE loan_id = $1", call.loan_id)
    assert [r["kind"] for r in kinds] == ["voice_agent"]


async def test_pressing_9_stops_automated_calls_to_the_number_on_every_loan(
        api: Api, pool: asyncpg.Pool) -> None:
    call = await placed_call(pool)
    answer = await post(api, GATHER_PATH, press(call, "9"))
    assert answer.status_code == 200, answer.text
    assert CONFIRM_VOICE_OPT_OUT in answer.text and "<Dial" not in answer.text
    assert await voice_suppressions(pool, call.phone) == [("voice", "opt_out", VOICE_OPT_OUT_RULE)]
    # Twilio retrying the action: the same answer, nothing new.
    again = await post(api, GATHER_PATH, press(call, "9"))
    assert (again.status_code, again.text) == (200, answer.text)
    assert await events_of(pool, call.sid) == [(f"gather:{call.sid}:9", "gather_opt_out")]
    events = await pool.fetch("SELECT kind, rule, actor FROM events WHERE loan_id = $1",
                              call.loan_id)
    assert [(r["kind"], r["rule"], r["actor"]) for r in events] == [
        ("voice_opt_out", VOICE_OPT_OUT_RULE, "borrower")]

    # The reservation refuses an automated call on another loan of the number, and only that.
    activities = ContactActivities(pool)
    other_loan = new_id()
    refused = await activities.reserve_contact(_request(other_loan, call.phone, "voice"))
    assert (refused.allowed, refused.rule, refused.suppressed) == (
        False, VOICE_OPT_OUT_RULE, True)
    assert refused.reason == "the borrower pressed 9 in an automated call"
    sms = await activities.reserve_contact(_request(other_loan, call.phone, "sms"))
    assert sms.allowed


async def test_a_chinese_number_hears_the_confirmation_in_chinese_and_other_keys_hang_up(
        api: Api, pool: asyncpg.Pool) -> None:
    call = await placed_call(pool, a_phone("+86"))
    answer = await post(api, GATHER_PATH, press(call, "9"))
    assert CONFIRM_VOICE_OPT_OUT_ZH in answer.text and 'voice="Polly.Zhiyu"' in answer.text
    other = await placed_call(pool)
    hung_up = await post(api, GATHER_PATH, press(other, "5"))
    assert hung_up.text.endswith("<Response><Hangup /></Response>")
    assert await voice_suppressions(pool, other.phone) == []
