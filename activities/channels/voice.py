"""Automated voice reminders through Twilio's Calls API, with TwiML built by the twilio SDK.

The call reads the reminder in the borrower's language (the amount and the payment link included)
inside a `<Gather>`: pressing 1 connects an agent, pressing 9 stops these calls (the webhooks in
`api/routes/voice_webhooks.py` answer both). Twilio reports the call's end to the status callback
with answering-machine detection; the follow-up here reads the same from the Call resource, so the
case learns the outcome with or without the webhook.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from temporalio.exceptions import ApplicationError
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from activities.channels.base import ChannelAdapter
from activities.channels.outbox import PermanentSendError, TransientSendError
from activities.channels.sms import ADDRESS_CODES, PERMANENT_CODES
from activities.templates import RenderedMessage, render
from contracts.activity_io import FollowUpInput, FollowUpResult, SendInput
from contracts.channels import VOICE

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Twilio's <Say> voices by the borrower's locale (Amazon Polly through Twilio).
VOICES = {"en": ("Polly.Joanna", "en-US"), "zh-CN": ("Polly.Zhiyu", "cmn-CN")}
IN_PROGRESS = {"queued", "initiated", "ringing", "in-progress"}
MACHINE = {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
# Calls-only codes: 13223/13224 an invalid or unreachable number for voice.
VOICE_ADDRESS_CODES = {13223, 13224}
STATUS_PATH = "/webhooks/twilio/voice/status"
GATHER_PATH = "/webhooks/twilio/voice/gather"
AGENT_DIGIT, OPT_OUT_DIGIT = "1", "9"
POLL_SECONDS, POLL_INTERVAL = 20.0, 0.5


def _code(err: TwilioRestException) -> str:
    return f"twilio_{err.code or err.status}"


def outcome_of(status: str, answered_by: str | None) -> FollowUpResult:
    """A finished call as the case records it: connected, or unanswered (a machine is not a
    conversation: NIFA counts "effective" calls, Regulation F conversations)."""
    detail = f"{status}/{answered_by}" if answered_by else status
    if status == "completed":
        if answered_by in MACHINE:
            return FollowUpResult("delivered", "unanswered", detail)
        return FollowUpResult("delivered", "connected", detail)
    return FollowUpResult("not_delivered", "unanswered", detail)


class TwilioVoice(ChannelAdapter):
    channel = VOICE.name

    def __init__(self, client: Client, from_number: str, callback_base: str | None = None,
                 agent_number: str = "") -> None:
        self.client = client
        self.from_number = from_number
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self.agent_number = agent_number

    def usable(self, address: str) -> bool:
        return bool(_E164.match(address))

    def render(self, inp: SendInput, context: Mapping[str, Any]) -> RenderedMessage:
        # The "press 1" line only where a webhook can answer the key press.
        here = {**context, "agent_option": self.callback_base is not None}
        return render(inp.template, self.channel, inp.locale, here)

    def twiml(self, locale: str, text: str) -> str:
        voice, language = VOICES.get(locale, VOICES["en"])
        response = VoiceResponse()
        if self.callback_base is not None:
            gather = Gather(num_digits=1, action=self.callback_base + GATHER_PATH, method="POST",
                            timeout=5)
            gather.say(text, voice=voice, language=language)
            response.append(gather)
        else:
            response.say(text, voice=voice, language=language)
        return str(response)

    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        options: dict[str, Any] = {"machine_detection": "Enable"}
        if self.callback_base is not None:
            options.update(status_callback=self.callback_base + STATUS_PATH,
                           status_callback_method="POST",
                           status_callback_event=["completed"])
        call = await self.client.calls.create_async(
            to=inp.to, from_=self.from_number, twiml=self.twiml(inp.locale, message.body),
            **options)
        return str(call.sid)

    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        # The Call resource does not carry its TwiML: a call from our number to this one since the
        # claim is taken as ours. Two loans of one borrower calling in the same seconds would miss
        # a call, never make one twice.
        calls = await self.client.calls.list_async(to=inp.to, from_=self.from_number,
                                                   start_time_after=since, limit=20)
        return str(calls[0].sid) if calls else None

    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        if isinstance(err, TwilioRestException):
            if err.code in PERMANENT_CODES | VOICE_ADDRESS_CODES or err.status == 400:
                return PermanentSendError(_code(err))
            return TransientSendError(_code(err))
        if isinstance(err, aiohttp.ClientConnectorError):
            return TransientSendError("connect_failed")
        return None

    def address_unusable(self, error_code: str) -> bool:
        return super().address_unusable(error_code) or error_code in {
            f"twilio_{code}" for code in ADDRESS_CODES | VOICE_ADDRESS_CODES}

    async def follow_up(self, inp: FollowUpInput) -> FollowUpResult:
        # Polled here for a while (most reminders end within it), then Temporal retries the
        # activity with backoff until the call ends (the activity's own retry policy).
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            call = await self.client.calls(inp.provider_id).fetch_async()
            status = str(call.status or "")
            if status not in IN_PROGRESS:
                answered_by = str(call.answered_by) if call.answered_by else None
                return outcome_of(status, answered_by)
            if time.monotonic() >= deadline:
                raise ApplicationError("the call has not ended yet", type="CallInProgress")
            await asyncio.sleep(POLL_INTERVAL)

    async def close(self) -> None:
        await self.client.http_client.close()
