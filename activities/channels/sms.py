"""SMS through Twilio's Messages API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from activities.channels.base import ChannelAdapter
from activities.channels.outbox import (
    Outbox,
    PermanentSendError,
    TransientSendError,
    body_hash,
    retry_after,
)
from activities.templates import LinkBuilder, RenderedMessage
from contracts.activity_io import SendInput, SendResult
from contracts.channels import SMS
from contracts.contact_keys import OPT_OUT_RULE, phone_key

# Twilio error codes that no retry will fix: invalid, unreachable or opted-out numbers, and a
# destination the account may not send to.
PERMANENT_CODES = {21211, 21214, 21217, 21408, 21610, 21612, 21614}
# Of those, the ones that say the number itself is no good for SMS (21408 is the account's
# permissions, not the borrower's number).
ADDRESS_CODES = {21211, 21214, 21217, 21610, 21612, 21614}
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Twilio refuses a send to a number that replied STOP: as good as an opt-out from it.
UNSUBSCRIBED = "twilio_21610"


class RetryAfterHttpClient(AsyncTwilioHttpClient):
    """Twilio's async client, surfacing 429's Retry-After (the SDK's exception drops headers)."""

    def __init__(self, timeout_seconds: float = 20) -> None:
        super().__init__()
        self.client_timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                      headers: Any = None, auth: Any = None,
                      timeout: Any = None,  # noqa: ASYNC109 (the SDK's signature; ours is set above)
                      allow_redirects: bool = False) -> Response:
        session = self.session
        assert session is not None
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        kwargs = {"params": params, "data": data, "headers": headers,
                  "timeout": self.client_timeout, "allow_redirects": allow_redirects}
        async with session.request(method.upper(), url, **kwargs) as resp:
            text = await resp.text()
            if resp.status == 429 or resp.status >= 500:
                raise TransientSendError(f"http_{resp.status}",
                                         retry_after(resp.headers.get("Retry-After")))
            return Response(resp.status, text, resp.headers)


def twilio_client(account_sid: str, auth_token: str, base_url: str | None,
                  timeout_seconds: float = 20) -> Client:
    client = Client(account_sid, auth_token, http_client=RetryAfterHttpClient(timeout_seconds))
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client


def _code(err: TwilioRestException) -> str:
    return f"twilio_{err.code or err.status}"


class TwilioSms(ChannelAdapter):
    channel = SMS.name

    def __init__(self, client: Client, from_number: str) -> None:
        self.client = client
        self.from_number = from_number

    def usable(self, address: str) -> bool:
        return bool(_E164.match(address))

    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        sent = await self.client.messages.create_async(
            to=inp.to, from_=self.from_number, body=message.body
        )
        return str(sent.sid)

    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        page = await self.client.messages.list_async(to=inp.to, date_sent_after=since, limit=50)
        for m in page:
            if body_hash(inp.to, m.body or "") == digest:
                return str(m.sid)
        return None

    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        if isinstance(err, TwilioRestException):
            if err.code in PERMANENT_CODES or err.status == 400:
                return PermanentSendError(_code(err))
            return TransientSendError(_code(err))
        if isinstance(err, aiohttp.ClientConnectorError):
            # No connection was made: the request never left. (A reset or disconnect after it
            # left is not classified: the outbox reconciles those.)
            return TransientSendError("connect_failed")
        return None

    async def send(self, inp: SendInput, outbox: Outbox, links: LinkBuilder) -> SendResult:
        result = await super().send(inp, outbox, links)
        if result.status == "failed" and result.error_code == UNSUBSCRIBED:
            # Every loan of this number stops texting it (until START), as after a STOP.
            await outbox.pool.execute(
                """
                INSERT INTO contact_suppressions (contact_key, channel, kind, rule, reason, source)
                VALUES ($1, 'sms', 'opt_out', $2, 'Twilio 21610: the recipient unsubscribed', $3)
                ON CONFLICT (contact_key, channel, kind) DO UPDATE SET
                    rule = EXCLUDED.rule, reason = EXCLUDED.reason, source = EXCLUDED.source,
                    created_at = now(), lifted_at = NULL, lifted_by = NULL
                WHERE contact_suppressions.lifted_at IS NOT NULL
                """,
                phone_key(inp.to), OPT_OUT_RULE, f"twilio:refused:{inp.outbox_key}",
            )
        return result

    def address_unusable(self, error_code: str) -> bool:
        return super().address_unusable(error_code) or error_code in {
            f"twilio_{code}" for code in ADDRESS_CODES
        }

    async def close(self) -> None:
        # The Twilio client holds an aiohttp session: close it ("Unclosed client session").
        await self.client.http_client.close()
