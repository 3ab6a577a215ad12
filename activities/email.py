"""E-mail through SendGrid's v3 API, sent at most once per workflow step."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.error
from datetime import datetime

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient
from temporalio import activity

from activities.outbox import Outbox, PermanentSendError, TransientSendError, body_hash, retry_after
from activities.templates import LinkBuilder, render
from contracts.activity_io import SEND_EMAIL, SendInput, SendResult

# At DEBUG, the SendGrid SDK's HTTP client logs every request body (the borrower's name, amounts,
# the message text) and its headers (the API key). Log masking catches addresses, not those.
logging.getLogger("python_http_client").setLevel(logging.INFO)


def sendgrid_client(api_key: str, base_url: str | None) -> SendGridAPIClient:
    if base_url:
        return SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
    return SendGridAPIClient(api_key=api_key)


class EmailActivities:
    def __init__(self, client: SendGridAPIClient, from_email: str, outbox: Outbox,
                 payment_link_base: str, timeout_seconds: float = 20) -> None:
        self.client = client
        self.from_email = from_email
        self.outbox = outbox
        self.links = LinkBuilder(payment_link_base)
        self.timeout_seconds = timeout_seconds

    @activity.defn(name=SEND_EMAIL)
    async def send_email(self, inp: SendInput) -> SendResult:
        message = render(inp.template, "email", inp.locale, self.links.complete(inp.loan_id, inp.context))
        digest = body_hash(inp.to, f"{message.subject}\n{message.body}")
        payload = {
            "personalizations": [{"to": [{"email": inp.to}]}],
            "from": {"email": self.from_email},
            "subject": message.subject or "",
            "content": [{"type": "text/plain", "value": message.body}],
            # Lets a retry find this message in the provider's activity log.
            "custom_args": {"outbox_key": inp.outbox_key, "loan_ref": inp.loan_id},
        }

        def post() -> str:
            try:
                resp = self.client.client.mail.send.post(request_body=payload,
                                                         timeout=self.timeout_seconds)
            except (http_errors.TooManyRequestsError, http_errors.InternalServerError,
                    http_errors.ServiceUnavailableError, http_errors.GatewayTimeoutError) as err:
                raise TransientSendError(
                    f"sendgrid_{err.status_code}", retry_after((err.headers or {}).get("Retry-After"))
                ) from None
            except http_errors.HTTPError as err:
                raise PermanentSendError(f"sendgrid_{err.status_code}") from None
            except urllib.error.URLError as err:
                # Refused or unresolvable at connect: the request never left. Anything else
                # (reset, remote disconnected) propagates and the outbox reconciles.
                if isinstance(err.reason, (ConnectionRefusedError, socket.gaierror)):
                    raise TransientSendError("connect_failed") from None
                raise
            return resp.headers.get("X-Message-Id") or f"sg-{inp.outbox_key}"

        def find() -> str | None:
            query = f"unique_args['outbox_key']=\"{inp.outbox_key}\""
            resp = self.client.client.messages.get(query_params={"query": query, "limit": 1},
                                                   timeout=self.timeout_seconds)
            found = json.loads(resp.body or b"{}").get("messages") or []
            return found[0].get("msg_id") if found else None

        async def send() -> str:
            return await asyncio.to_thread(post)

        async def lookup(since: datetime) -> str | None:
            return await asyncio.to_thread(find)

        return await self.outbox.send_once(inp.outbox_key, "email", digest, send, lookup)
