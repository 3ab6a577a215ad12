"""E-mail through SendGrid's v3 API."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import urllib.error
from datetime import datetime
from typing import Any

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from activities.channels.base import ChannelAdapter
from activities.channels.outbox import PermanentSendError, TransientSendError, retry_after
from activities.templates import RenderedMessage
from contracts.activity_io import SendInput
from contracts.channels import EMAIL

# At DEBUG, the SendGrid SDK's HTTP client logs every request body (the borrower's name, amounts,
# the message text) and its headers (the API key). Log masking catches addresses, not those.
logging.getLogger("python_http_client").setLevel(logging.INFO)

_TRANSIENT = (http_errors.TooManyRequestsError, http_errors.InternalServerError,
              http_errors.ServiceUnavailableError, http_errors.GatewayTimeoutError)
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
# Refused as a bad request: the payload's shape is ours and fixed, so what a 400 refuses is the one
# part that changes with the borrower, the address. 403 and 413 are the account's or the message's.
ADDRESS_REFUSED = "sendgrid_400"


def sendgrid_client(api_key: str, base_url: str | None) -> SendGridAPIClient:
    if base_url:
        return SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
    return SendGridAPIClient(api_key=api_key)


class SendGridEmail(ChannelAdapter):
    channel = EMAIL.name

    def __init__(self, client: SendGridAPIClient, from_email: str,
                 timeout_seconds: float = 20) -> None:
        self.client = client
        self.from_email = from_email
        self.timeout_seconds = timeout_seconds

    def usable(self, address: str) -> bool:
        return bool(_ADDRESS.match(address))

    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        payload = {
            "personalizations": [{"to": [{"email": inp.to}]}],
            "from": {"email": self.from_email},
            "subject": message.subject or "",
            "content": [{"type": "text/plain", "value": message.body}],
            # Lets a retry find this message in the provider's activity log.
            "custom_args": {"outbox_key": inp.outbox_key, "loan_ref": inp.loan_id},
        }

        def post() -> str:
            resp = self.client.client.mail.send.post(request_body=payload,
                                                     timeout=self.timeout_seconds)
            return resp.headers.get("X-Message-Id") or f"sg-{inp.outbox_key}"

        # The SDK's client blocks.
        return await asyncio.to_thread(post)

    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        def find() -> str | None:
            query = f"unique_args['outbox_key']=\"{inp.outbox_key}\""
            resp = self.client.client.messages.get(query_params={"query": query, "limit": 1},
                                                   timeout=self.timeout_seconds)
            found: list[dict[str, Any]] = json.loads(resp.body or b"{}").get("messages") or []
            return found[0].get("msg_id") if found else None

        return await asyncio.to_thread(find)

    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        if isinstance(err, _TRANSIENT):
            headers = err.headers or {}
            return TransientSendError(f"sendgrid_{err.status_code}",
                                      retry_after(headers.get("Retry-After")))
        if isinstance(err, http_errors.HTTPError):
            return PermanentSendError(f"sendgrid_{err.status_code}")
        if isinstance(err, urllib.error.URLError) and isinstance(
            err.reason, (ConnectionRefusedError, socket.gaierror)
        ):
            # Refused or unresolvable at connect: the request never left. Anything else (reset,
            # remote disconnected) may have reached SendGrid: the outbox reconciles.
            return TransientSendError("connect_failed")
        return None

    def address_unusable(self, error_code: str) -> bool:
        return super().address_unusable(error_code) or error_code == ADDRESS_REFUSED
