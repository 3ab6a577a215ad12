"""SMS through Twilio's Messages API, sent at most once per workflow step."""

from __future__ import annotations

from datetime import datetime

import aiohttp
from temporalio import activity
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from activities.outbox import Outbox, PermanentSendError, TransientSendError, body_hash, retry_after
from activities.templates import LinkBuilder, render
from contracts.activity_io import SEND_SMS, SendInput, SendResult

# Twilio error codes that no retry will fix: invalid, unreachable or opted-out numbers.
PERMANENT_CODES = {21211, 21214, 21217, 21408, 21610, 21612, 21614}


class RetryAfterHttpClient(AsyncTwilioHttpClient):
    """Twilio's async client, surfacing 429's Retry-After (the SDK's exception drops headers)."""

    def __init__(self, timeout_seconds: float = 20) -> None:
        super().__init__()
        self.client_timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def request(self, method, url, params=None, data=None, headers=None, auth=None,
                      timeout=None, allow_redirects=False) -> Response:
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
                raise TransientSendError(f"http_{resp.status}", retry_after(resp.headers.get("Retry-After")))
            return Response(resp.status, text, resp.headers)


def twilio_client(account_sid: str, auth_token: str, base_url: str | None,
                  timeout_seconds: float = 20) -> Client:
    client = Client(account_sid, auth_token, http_client=RetryAfterHttpClient(timeout_seconds))
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client


class SmsActivities:
    def __init__(self, client: Client, from_number: str, outbox: Outbox, payment_link_base: str) -> None:
        self.client = client
        self.from_number = from_number
        self.outbox = outbox
        self.links = LinkBuilder(payment_link_base)

    @activity.defn(name=SEND_SMS)
    async def send_sms(self, inp: SendInput) -> SendResult:
        message = render(inp.template, "sms", inp.locale, self.links.complete(inp.loan_id, inp.context))
        digest = body_hash(inp.to, message.body)

        async def send() -> str:
            try:
                sent = await self.client.messages.create_async(
                    to=inp.to, from_=self.from_number, body=message.body
                )
            except TwilioRestException as err:
                if err.code in PERMANENT_CODES or err.status == 400:
                    raise PermanentSendError(f"twilio_{err.code or err.status}") from None
                raise TransientSendError(f"twilio_{err.code or err.status}") from None
            except aiohttp.ClientConnectorError:
                # No connection was made: the request never left. (A reset or disconnect after
                # it left is not caught here: the outbox reconciles those.)
                raise TransientSendError("connect_failed") from None
            return str(sent.sid)

        async def lookup(since: datetime) -> str | None:
            page = await self.client.messages.list_async(to=inp.to, date_sent_after=since, limit=50)
            for m in page:
                if body_hash(inp.to, m.body or "") == digest:
                    return str(m.sid)
            return None

        return await self.outbox.send_once(inp.outbox_key, "sms", digest, send, lookup)
