"""Automated voice reminders (issue 17) through the real twilio SDK and the emulator's Calls API:
answered, not answered and a machine, each recorded with its outcome; the TwiML read out; a `us`
borrower without prior express consent getting no prerecorded call; the caps counting voice with
agent calls, SMS and WeCom; no second call when an attempt dies after Twilio placed the call."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.channels.outbox import Outbox
from activities.channels.sms import twilio_client
from activities.channels.voice import TwilioVoice
from activities.templates import LinkBuilder
from activities.wiring import Providers
from contracts.activity_io import SendInput
from contracts.messages import Stage
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from policies import compliance
from policies.loader import load_rule_packs
from tests.helpers import at_local, make_loan, pinned, start_case

STEPS = [
    Step(id="voice-reminder", day=1, hour=10, stage=Stage.EARLY, kind="message",
         channels=["voice"], template="early_reminder"),
    Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", notice="collection_ending"),
]


async def run_voice_case(env: WorkflowEnvironment, worker: Worker, loan_id: str,
                         **loan: Any) -> Any:
    _, today = await at_local(env, 9)
    made = make_loan(loan_id, due=today - timedelta(days=1), **loan)
    handle = await start_case(env.client, made, worker.task_queue,
                              pinned(made).model_copy(update={"steps": STEPS}))
    await asyncio.wait_for(handle.result(), timeout=60)
    return made


async def rows(pool: asyncpg.Pool, loan_id: str) -> dict[str, asyncpg.Record]:
    found = await pool.fetch("SELECT * FROM contacts WHERE loan_id = $1", loan_id)
    return {r["channel"]: r for r in found}


@pytest.mark.parametrize(("status", "answered_by", "outcome", "detail"), [
    ("completed", "human", "connected", "completed/human"),
    ("no-answer", "human", "unanswered", "no-answer"),
    ("completed", "machine_start", "unanswered", "completed/machine_start"),
])
async def test_a_voice_reminder_is_recorded_with_its_outcome(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str, status: str, answered_by: str, outcome: str, detail: str,
) -> None:
    phone = "+86139" + uuid.uuid4().int.__str__()[:8]
    emulator.calls.set_behaviour(phone, status, answered_by)
    loan = await run_voice_case(ts_env, ts_worker, loan_id, phone=phone, locale="zh-CN")
    voice = (await rows(pool, loan.loan_id))["voice"]
    assert (voice["decision"], voice["outcome"]) == ("sent", outcome)
    assert detail in voice["reason"]
    assert voice["contact_key"].startswith("p:")  # counted with SMS and agent calls
    [call] = [c for c in emulator.calls.calls() if c["to"] == phone]
    assert call["status"] == status
    assert 'language="cmn-CN"' in call["twiml"] and loan.loan_id in call["twiml"]
    assert "1,200.00 CNY" in call["twiml"] and "pay.lender.example/loan/" in call["twiml"]
    assert emulator.messages(channel="sms", to=phone) == []


async def test_a_us_borrower_without_consent_gets_no_prerecorded_call(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    phone = "+1212555" + uuid.uuid4().int.__str__()[:4]
    loan = await run_voice_case(ts_env, ts_worker, loan_id, phone=phone,
                                timezone="America/New_York", currency="USD")
    found = await rows(pool, loan.loan_id)
    assert (found["voice"]["decision"], found["voice"]["rule"]) == (
        "skipped", "us.tcpa.prerecorded_call_prior_express_consent")
    assert found["sms"]["decision"] == "sent"  # the step fell back as the table says
    assert [c for c in emulator.calls.calls() if c["to"] == phone] == []

    consented = await run_voice_case(ts_env, ts_worker, f"{loan_id}c", phone=phone,
                                     timezone="America/New_York", currency="USD",
                                     prerecorded_call_consent=True)
    assert (await rows(pool, consented.loan_id))["voice"]["decision"] == "sent"


def test_caps_count_voice_with_agent_calls_and_wecom_with_sms() -> None:
    packs = load_rule_packs()
    cn, us = packs["cn"], packs["us"]
    at = datetime(2026, 12, 1, 4, tzinfo=UTC)  # 12:00 in Shanghai
    tz, phone = "Asia/Shanghai", "p:1"

    def attempt(channel: str, outcome: str, minutes: int, key: str = phone) -> compliance.Attempt:
        return compliance.Attempt(at - timedelta(minutes=minutes), channel, "L1", key, outcome)

    def check(pack: Any, channel: str, attempts: list[compliance.Attempt],
              key: str = phone) -> compliance.CapDecision:
        return compliance.evaluate_caps(pack, channel=channel, at=at, tz=tz, loan_id="L1",
                                        contact_key=key, attempts=attempts)

    # NIFA: 3 connected calls a day, agent and automated together.
    talks = [attempt("call", "connected", 60), attempt("voice", "connected", 50),
             attempt("call", "connected", 40)]
    assert check(cn, "voice", talks).rule == "cn.nifa.connected_calls_per_day"
    assert check(cn, "call", talks[:2]).allowed
    # CBA: 6 unanswered on one channel: the phone's calls, whoever placed them; SMS apart.
    rings = [attempt("voice" if i % 2 else "call", "unanswered", 10 + i) for i in range(6)]
    assert check(cn, "call", rings).rule == "cn.cba.unanswered_per_channel_per_day"
    assert check(cn, "sms", rings).allowed
    texts = [attempt("sms", "sent", 10 + i) for i in range(5)]
    assert check(cn, "sms", texts).allowed and check(cn, "wecom", texts, "w:1").allowed
    wecom = [attempt("wecom", "sent", 10 + i, "w:1") for i in range(6)]
    assert check(cn, "wecom", wecom, "w:1").rule == "cn.cba.unanswered_per_channel_per_day"
    # WeCom's own monthly allowance per external contact.
    month = [compliance.Attempt(at - timedelta(days=i + 1), "wecom", "L1", "w:1", "connected")
             for i in range(28)]
    assert check(cn, "wecom", month, "w:1").rule == "wecom.messages_per_customer_per_month"
    # Regulation F: 7 calls in 7 days on the debt, voice reminders included.
    week = [compliance.Attempt(at - timedelta(days=i, hours=1), "voice" if i % 2 else "call",
                               "L1", phone, "unanswered") for i in range(7)]
    assert check(us, "voice", week).rule == "us.regf.7_calls_in_7_days"
    assert check(us, "call", week[:6]).allowed
    # A conversation on an automated call starts Regulation F's 7 quiet days too.
    assert check(us, "voice", [attempt("call", "connected", 60)]).rule == (
        "us.regf.7_days_after_conversation")


async def test_the_twiml_reads_the_reminder_and_offers_an_agent() -> None:
    adapter = TwilioVoice(twilio_client("AC" + "0" * 32, "t", "http://127.0.0.1:9"),
                          "+15005550006", callback_base="https://collect.lender.example")
    try:
        twiml = adapter.twiml("en", "Please pay 10.00 USD at https://pay.example/L1.")
    finally:
        await adapter.close()
    assert '<Gather action="https://collect.lender.example/webhooks/twilio/voice/gather"' in twiml
    assert 'numDigits="1"' in twiml and 'language="en-US"' in twiml
    assert "https://pay.example/L1" in twiml


async def test_no_second_call_when_the_attempt_dies_after_twilio_placed_it(
    emulator: ProviderEmulator, pool: asyncpg.Pool, providers: Providers,
) -> None:
    phone = "+86137" + uuid.uuid4().int.__str__()[:8]
    client = twilio_client(providers.twilio_sid, providers.twilio_token, emulator.url,
                           timeout_seconds=0.5)
    adapter = TwilioVoice(client, providers.twilio_from)
    emulator.add_fault(phone, "slow", channel="voice", times=1, delay=2)
    inp = SendInput(outbox_key=f"voice-test-{uuid.uuid4().hex}", loan_id="L-VOICE",
                    channel="voice", to=phone, template="early_reminder", locale="en",
                    context={"lender": "Demo Lender", "borrower_name": "Li Lei",
                             "loan_ref": "L-VOICE", "amount": "10.00", "currency": "CNY",
                             "days_overdue": 3, "due_date": "2026-11-20", "days_before_due": 0,
                             "opt_out": False, "validation_notice": False})
    outbox = Outbox(pool, in_flight_for=timedelta(seconds=0))
    links = LinkBuilder(providers.payment_link_base)
    try:
        with pytest.raises(TimeoutError):
            await adapter.send(inp, outbox, links)
        retried = await adapter.send(inp, outbox, links)
    finally:
        await adapter.close()
    [call] = [c for c in emulator.calls.calls() if c["to"] == phone]
    assert (retried.status, retried.reused, retried.provider_id) == ("sent", True, call["sid"])
