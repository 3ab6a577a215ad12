"""Notices the case owes (payment acknowledgements, receipts) after the borrower texted STOP: the
opted-out channel is not used for them either (TCPA, Regulation F: after STOP only the provider's
one confirmation), the notice goes out on its other channel (the receipt by e-mail), and an
SMS-only notice is recorded as skipped with the opt-out's rule.

Over real HTTP to the running API, the emulator playing Twilio and SendGrid (signed callbacks,
the borrower's STOP); the case runs under the `demo` policy (a policy day lasts 3 s)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts.contact_keys import phone_key
from infra.emulator import ProviderEmulator
from infra.emulator import twilio as twilio_emulator
from infra.emulator.server import WebhookTargets
from infra.webhook_keys import local_key_pair
from service.provider_events import CONFIRM_OPT_OUT
from tests.api.calls import Api, idem, loan_body, new_id
from tests.helpers import eventually

STEP_WAIT = 45.0  # a few policy days of 3 s, on a loaded 2-core machine
OPT_OUT_RULE = "tcpa.opt_out"


@pytest.fixture(scope="module")
async def webhooks(api: Api, emulator: ProviderEmulator, state_dir: Path) -> AsyncIterator[None]:
    """The emulator calls the API's webhooks, signed with the secrets the API was given."""
    pair = local_key_pair(state_dir / "api-state")
    emulator.configure_webhooks(WebhookTargets(api.url, twilio_emulator.AUTH_TOKEN,
                                               pair.private_pem, delay_seconds=0.2))
    try:
        yield
    finally:
        emulator.configure_webhooks(None)


def texts_to(emulator: ProviderEmulator, phone: str) -> list[dict[str, Any]]:
    """The case's SMS to `phone` (not Twilio's TwiML answers to the borrower's replies)."""
    return [m for m in emulator.messages("sms", to=phone) if not m.get("reply_to")]


async def notices(pool: asyncpg.Pool, loan_id: str) -> list[tuple[str, str, str, str | None]]:
    rows = await pool.fetch(
        "SELECT template, channel, decision, rule FROM contacts WHERE loan_id = $1 "
        "AND template IN ('payment_ack', 'payment_receipt') ORDER BY id", loan_id)
    return [(r["template"], r["channel"], r["decision"], r["rule"]) for r in rows]


async def test_after_stop_receipts_skip_sms_and_go_by_email(
        api: Api, pool: asyncpg.Pool, emulator: ProviderEmulator, webhooks: None) -> None:
    loan_id, phone = new_id(), "+86139" + "".join(random.choices("0123456789", k=8))
    email = f"{loan_id.lower()}@example.com"
    due = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    async with api.http() as http:
        started = await http.post("/v1/cases", json=loan_body(
            loan_id, phone=phone, email=email, policy="demo", due_date=due, locale="en"),
            headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        # The pre-due SMS goes out and is delivered; then the borrower texts STOP.
        await eventually(lambda: pool.fetchval(
            "SELECT count(*) FROM contacts WHERE loan_id = $1 AND channel = 'sms' "
            "AND delivery_status = 'delivered'", loan_id), lambda n: n >= 1, timeout=STEP_WAIT)
        stop = await emulator.twilio.inbound(phone, "STOP")
        assert (stop["status"], stop["replies"]) == (200, [CONFIRM_OPT_OUT])
        assert await pool.fetchval(
            "SELECT rule FROM contact_suppressions WHERE contact_key = $1 AND channel = 'sms' "
            "AND lifted_at IS NULL", phone_key(phone)) == OPT_OUT_RULE
        texts_before = len(texts_to(emulator, phone))

        # A part payment owes an SMS-only acknowledgement; paying the rest owes a receipt by
        # SMS and e-mail.
        part = await http.post(f"/v1/cases/{loan_id}/payments",
                               json={"payment_id": f"{loan_id}-P1", "amount": "300.00",
                                     "currency": "CNY"},
                               headers=api.auth("loan-system") | idem())
        assert (part.status_code, part.json()["status"]) == (200, "applied"), part.text
        rest = await http.post(f"/v1/cases/{loan_id}/payments",
                               json={"payment_id": f"{loan_id}-P2", "amount": "900.00",
                                     "currency": "CNY"},
                               headers=api.auth("loan-system") | idem())
        assert (rest.status_code, rest.json()["status"]) == (200, "applied"), rest.text

    decided = await eventually(
        lambda: notices(pool, loan_id),
        lambda rows: {(t, c) for t, c, _, _ in rows} >= {("payment_ack", "sms"),
                                                          ("payment_receipt", "sms"),
                                                          ("payment_receipt", "email")},
        timeout=STEP_WAIT)
    # SMS: skipped with the opt-out's rule, never tried (no 21610 refusal, nothing sent).
    assert ("payment_ack", "sms", "skipped", OPT_OUT_RULE) in decided
    assert ("payment_receipt", "sms", "skipped", OPT_OUT_RULE) in decided
    assert not [n for n in decided if n[1] == "sms" and n[2] != "skipped"]
    # E-mail: the receipt goes out.
    assert ("payment_receipt", "email", "sent") in [n[:3] for n in decided]
    # ... and reaches SendGrid (the outbox key names the notice).
    await eventually(lambda: _receipts(emulator, email), lambda ms: len(ms) == 1,
                     timeout=STEP_WAIT)
    assert len(texts_to(emulator, phone)) == texts_before


async def _receipts(emulator: ProviderEmulator, address: str) -> list[dict[str, Any]]:
    return [m for m in emulator.messages("email", to=address)
            if "/payment_receipt-" in m["custom_args"].get("outbox_key", "")]
