"""Opt-outs and suppressed addresses without the API: the keywords, the contact keys, the
reservation refusing a suppressed channel on every loan of that number (and not the others), a
21610 refusal taken as an opt-out, and the providers' own signature helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import asyncpg
import pytest
from sendgrid import EventWebhook
from twilio.request_validator import RequestValidator

from activities.channels.outbox import Outbox
from activities.channels.sms import TwilioSms, twilio_client
from activities.database.contacts import ContactActivities
from activities.policies import resolve
from activities.templates import LinkBuilder
from activities.wiring import Providers
from contracts.activity_io import ContactRequest, SendInput
from contracts.contact_keys import email_key, phone_key
from infra.emulator import ProviderEmulator
from infra.webhook_keys import generate
from service.provider_events import (
    StatusCallback,
    apply_twilio_status,
    decrypt_reply,
    encrypt_reply,
    keyword_kind,
    lift,
    suppress,
)
from tests.helpers import make_loan
from workflows import addresses


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop ", "STOPALL", "unsubscribe", "Cancel",
                                  "END", "quit", "REVOKE", "optout", "退订", "TD", "t", "STOP."])
def test_opt_out_keywords_in_any_case(body: str) -> None:
    assert keyword_kind(body) == "opt_out"


@pytest.mark.parametrize(("body", "kind"), [("START", "opt_in"), ("unstop", "opt_in"),
                                            ("Yes", "opt_in"), ("HELP", "help"), ("info", "help"),
                                            ("stop texting me", "reply"), ("I paid", "reply"),
                                            ("", "reply")])
def test_other_keywords_and_replies(body: str, kind: str) -> None:
    assert keyword_kind(body) == kind


def test_contact_keys_are_the_cases_own() -> None:
    loan = make_loan("L-KEYS", date(2026, 1, 1), phone="+8613800138000", email="Li@Example.com")
    assert phone_key(loan.phone) == addresses.contact_key(loan, "sms")
    assert email_key(" li@example.com") == addresses.contact_key(loan, "email")


def _request(loan_id: str, phone: str, channel: str) -> ContactRequest:
    loan = make_loan(loan_id, date(2026, 1, 1), phone=phone)
    name = "sms" if channel == "sms" else "email"
    return ContactRequest(
        key=f"collection-{loan_id}/step-{uuid.uuid4().hex[:6]}/{channel}", loan_id=loan_id,
        borrower_key=addresses.borrower_key(loan), contact_key=addresses.contact_key(loan, name),
        channel=channel, step_id="early-sms", stage="early", template="early_reminder",
        at=datetime(2026, 1, 5, 4, 0, tzinfo=UTC),  # noon in Shanghai
        timezone="Asia/Shanghai", rule_pack=resolve(loan).rule_pack)


async def test_an_opt_out_refuses_sms_on_every_loan_of_the_number_and_only_sms(
        pool: asyncpg.Pool) -> None:
    phone = "+86137" + uuid.uuid4().hex[:8].translate(str.maketrans("abcdef", "123456"))
    activities = ContactActivities(pool)
    assert await suppress(pool, phone_key(phone), "sms", "opt_out", "tcpa.opt_out",
                          "the borrower replied an opt-out keyword", "test")
    assert not await suppress(pool, phone_key(phone), "sms", "opt_out", "tcpa.opt_out",
                              "again", "test")  # already in force
    for loan_id in ("OPT-A-" + uuid.uuid4().hex[:6], "OPT-B-" + uuid.uuid4().hex[:6]):
        decision = await activities.reserve_contact(_request(loan_id, phone, "sms"))
        assert (decision.allowed, decision.rule, decision.suppressed) == (
            False, "tcpa.opt_out", True)
        email = await activities.reserve_contact(_request(loan_id, phone, "email"))
        assert email.allowed
    assert await lift(pool, phone_key(phone), "sms", "opt_out", "test")
    decision = await activities.reserve_contact(_request("OPT-C-" + uuid.uuid4().hex[:6], phone,
                                                         "sms"))
    assert decision.allowed


async def test_a_21610_refusal_is_an_opt_out(pool: asyncpg.Pool, emulator: ProviderEmulator,
                                            providers: Providers) -> None:
    phone = "+86136" + uuid.uuid4().hex[:8].translate(str.maketrans("abcdef", "123456"))
    await emulator.twilio.inbound(phone, "STOP")  # Twilio blocks the number from now on
    sms = TwilioSms(twilio_client(providers.twilio_sid, providers.twilio_token,
                                  providers.twilio_base_url), providers.twilio_from)
    inp = SendInput(outbox_key=f"refused-{uuid.uuid4().hex}", loan_id="L-21610", channel="sms",
                    to=phone, template="early_reminder", locale="en",
                    context={"lender": "Demo Lender", "borrower_name": "Li", "loan_ref": "L-21610",
                             "amount": "1.00", "currency": "CNY", "days_overdue": 1,
                             "due_date": "2026-01-01", "days_before_due": 0, "opt_out": False,
                             "validation_notice": False})
    try:
        result = await sms.send(inp, Outbox(pool), LinkBuilder(providers.payment_link_base))
    finally:
        await sms.close()
    assert (result.status, result.error_code) == ("failed", "twilio_21610")
    row = await pool.fetchrow("SELECT kind, rule FROM contact_suppressions WHERE contact_key = $1 "
                              "AND lifted_at IS NULL", phone_key(phone))
    assert row is not None and (row["kind"], row["rule"]) == ("opt_out", "tcpa.opt_out")


async def test_status_callbacks_are_applied_once_and_30003_suppresses_nothing(
        pool: asyncpg.Pool) -> None:
    phone, sid = "+8613500000001", "SM" + uuid.uuid4().hex
    first = await apply_twilio_status(pool, StatusCallback(sid, "undelivered", "30003", phone))
    again = await apply_twilio_status(pool, StatusCallback(sid, "undelivered", "30003", phone))
    assert (first.applied, again.applied, again.duplicates) == (1, 0, 1)
    assert await pool.fetchval("SELECT count(*) FROM contact_suppressions WHERE contact_key = $1",
                               phone_key(phone)) == 0
    stored = await pool.fetchval("SELECT contact_key FROM provider_events WHERE event_key = $1",
                                 f"{sid}:undelivered")
    assert stored == phone_key(phone)


def test_reply_text_is_encrypted() -> None:
    keys = {"k1": bytes(range(32))}
    cipher, kid = encrypt_reply("I paid yesterday", keys)
    assert cipher is not None and kid == "k1" and b"paid" not in cipher
    assert decrypt_reply(cipher, kid, keys) == "I paid yesterday"
    assert encrypt_reply("text", None) == (None, None)


def test_twilio_signature_matches_twilios_own_test_vector() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert RequestValidator("12345").validate(url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_the_local_key_pair_verifies_with_sendgrids_helper() -> None:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    pair = generate()
    body, stamp = '[{"event":"delivered"}]\r\n', "1700000000"
    signature = base64.b64encode(pair.private_key.sign((stamp + body).encode(),
                                                       ec.ECDSA(hashes.SHA256()))).decode()
    hook = EventWebhook(pair.public_key_b64)
    assert hook.verify_signature(body, signature, stamp)
    assert not hook.verify_signature(body.replace("delivered", "bounce"), signature, stamp)
