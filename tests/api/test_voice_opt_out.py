"""The voice opt-out key through the emulator (issue 17): a reminder call offers "press 9 to stop
these calls"; the borrower presses 9, the emulator calls the API's `<Gather>` action signed as
Twilio does, and from then on the case's voice steps are skipped with `voice.opt_out` and fall
back to SMS, which the borrower did not opt out of: opt-outs are per channel."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.wiring import Providers
from contracts.messages import CaseState, Stage
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from infra.emulator import twilio as twilio_emulator
from infra.emulator.server import WebhookTargets
from infra.webhook_keys import local_key_pair
from service.voice_events import CONFIRM_VOICE_OPT_OUT_ZH, GATHER_PATH, VOICE_OPT_OUT_RULE
from tests.api.calls import Api
from tests.helpers import at_local, make_loan, pinned, start_case
from worker import running_worker

FIRST, SECOND = "voice-first", "voice-second"
STEPS = [
    Step(id=FIRST, day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["voice"],
         template="early_reminder"),
    Step(id=SECOND, day=2, hour=10, stage=Stage.EARLY, kind="message", channels=["voice"],
         template="early_reminder"),
    Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", notice="collection_ending"),
]


@pytest.fixture(scope="module")
async def voice_worker(api: Api, emulator: ProviderEmulator, state_dir: Path,
                       ts_env: WorkflowEnvironment, pool: asyncpg.Pool,
                       providers: Providers) -> AsyncIterator[Worker]:
    """A worker whose calls name the API as their callback (so the TwiML offers 1 and 9), with
    the emulator calling the API back."""
    pair = local_key_pair(state_dir / "api-state")
    emulator.configure_webhooks(WebhookTargets(api.url, twilio_emulator.AUTH_TOKEN,
                                               pair.private_pem, delay_seconds=0.1))
    calling_back = dataclasses.replace(providers, voice_callback_base=api.url)
    try:
        async with running_worker(ts_env.client, pool, calling_back,
                                  task_queue="ts-voice-callbacks") as worker:
            yield worker
    finally:
        await emulator.callbacks_done()
        emulator.configure_webhooks(None)


async def test_pressing_9_stops_the_voice_steps_and_they_fall_back_to_sms(
    api: Api, voice_worker: Worker, ts_env: WorkflowEnvironment, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    phone = "+86139" + str(uuid.uuid4().int)[:8]
    emulator.calls.set_behaviour(phone, "completed", "human", digits="9")
    _, today = await at_local(ts_env, 9)
    loan = make_loan(loan_id, due=today - timedelta(days=1), phone=phone, locale="en")
    handle = await start_case(ts_env.client, loan, voice_worker.task_queue,
                              pinned(loan).model_copy(update={"steps": STEPS}))
    result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.state == CaseState.WRITTEN_OFF

    [call] = [c for c in emulator.calls.calls() if c["to"] == phone]
    assert "To stop these calls, press 9." in call["twiml"]
    assert f'action="{api.url}{GATHER_PATH}"' in call["twiml"]
    [pressed] = [c for c in emulator.calls.callbacks if c["CallSid"] == call["sid"]
                 and c["Digits"] == "9"]
    # A Chinese number hears the confirmation in Chinese (service/voice_events.py).
    assert pressed["answer"].startswith("200 ") and CONFIRM_VOICE_OPT_OUT_ZH in pressed["answer"]

    rows = await pool.fetch("SELECT step_id, channel, decision, rule, outcome, idempotency_key "
                            "FROM contacts WHERE loan_id = $1 AND step_id = ANY($2::text[]) "
                            "ORDER BY occurred_at, idempotency_key", loan.loan_id, [FIRST, SECOND])
    got = [(r["step_id"], r["channel"], r["decision"], r["rule"]) for r in rows]
    assert got[0][:3] == (FIRST, "voice", "sent") and rows[0]["outcome"] == "connected"
    assert (SECOND, "voice", "skipped", VOICE_OPT_OUT_RULE) in got
    [sms] = [r for r in rows if r["channel"] == "sms"]
    assert (sms["step_id"], sms["decision"]) == (SECOND, "sent")
    assert sms["idempotency_key"].endswith(f"/{SECOND}-fallback/sms")
    assert len(emulator.messages(channel="sms", to=phone)) == 1

