"""Checking that a webhook call comes from the provider, with the providers' own helpers, before
anything is read into the database.

- Twilio: `X-Twilio-Signature`, HMAC-SHA1 with the auth token over the full URL Twilio requested
  and the form parameters (`twilio.request_validator.RequestValidator`). Behind a proxy the URL
  Twilio requested is WEBHOOK_BASE_URL + the path and query, not the one the app sees.
- SendGrid: ECDSA P-256 over the timestamp header + the raw body
  (`sendgrid.EventWebhook.verify_signature`); a timestamp more than WEBHOOK_MAX_AGE_SECONDS away
  is stale, so a recorded call cannot be replayed later.

A call without a signature is 401, a wrong or stale one 403, a provider whose secret is not
configured 503: problem details, nothing changed.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Final
from urllib.parse import parse_qsl

from fastapi import Request
from sendgrid import EventWebhook
from twilio.request_validator import RequestValidator

from api.problems import Problem
from service.provider_events import WebhookSecrets

TWILIO_SIGNATURE: Final = "X-Twilio-Signature"
SENDGRID_SIGNATURE: Final = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP: Final = "X-Twilio-Email-Event-Webhook-Timestamp"


class FormParams(dict[str, list[str]]):
    """Form parameters in the shape RequestValidator reads (`getlist`), every value kept."""

    def getlist(self, name: str) -> list[str]:
        return self[name]

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None

    def required(self, *names: str, may_be_empty: tuple[str, ...] = ()) -> list[str]:
        """The first value of each of `names`, in order; a 400 problem naming the first one
        missing (or empty, unless it `may_be_empty`)."""
        values = [self.first(name) for name in names]
        for name, value in zip(names, values, strict=True):
            if value is None or (not value and name not in may_be_empty):
                raise Problem(400, "webhook_body", f"{' and '.join(names)} are required",
                              field=name)
        return [value or "" for value in values]


def parse_form(body: bytes) -> FormParams:
    params = FormParams()
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Problem(400, "webhook_body", "the body is not UTF-8 form data") from None
    for name, value in parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return params


def requested_url(request: Request, base_url: str | None) -> str:
    """The URL as the provider called it: the configured public base, else what arrived."""
    if base_url is None:
        return str(request.url)
    query = request.url.query
    return base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _unsigned(provider: str, header: str) -> Problem:
    return Problem(401, "webhook_unsigned", f"a {provider} webhook call needs the {header} header")


def _not_configured(provider: str, variable: str) -> Problem:
    return Problem(503, "webhook_not_configured",
                   f"{provider} webhooks cannot be verified: {variable} is not set",
                   headers={"Retry-After": "60"})


async def verified_twilio_form(request: Request, secrets: WebhookSecrets) -> FormParams:
    """The form parameters of a Twilio call whose signature holds."""
    signature = request.headers.get(TWILIO_SIGNATURE)
    if not signature:
        raise _unsigned("Twilio", TWILIO_SIGNATURE)
    if secrets.twilio_auth_token is None:
        raise _not_configured("Twilio", "TWILIO_AUTH_TOKEN")
    body = await request.body()
    params = parse_form(body)
    validator = RequestValidator(secrets.twilio_auth_token)
    if not validator.validate(requested_url(request, secrets.base_url), params, signature):
        raise Problem(403, "webhook_signature", "the X-Twilio-Signature does not match the call")
    return params


async def verified_sendgrid_body(request: Request, secrets: WebhookSecrets) -> bytes:
    """The raw body of a SendGrid call whose signature holds and is fresh."""
    signature = request.headers.get(SENDGRID_SIGNATURE)
    timestamp = request.headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:
        raise _unsigned("SendGrid", f"{SENDGRID_SIGNATURE} and {SENDGRID_TIMESTAMP}")
    if secrets.sendgrid_public_key is None:
        raise _not_configured("SendGrid", "SENDGRID_WEBHOOK_PUBLIC_KEY")
    body = await request.body()
    try:
        payload = body.decode()
        base64.b64decode(signature, validate=True)
        hook = EventWebhook(secrets.sendgrid_public_key)
        valid = bool(hook.verify_signature(payload, signature, timestamp))
    except (UnicodeDecodeError, binascii.Error, ValueError):
        valid = False
    if not valid:
        raise Problem(403, "webhook_signature",
                      "the event webhook signature does not match the timestamp and body")
    # Checked after the signature: the timestamp is only worth reading once it is known signed.
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > secrets.max_age_seconds:
        raise Problem(403, "webhook_stale",
                      f"the signed timestamp is more than {secrets.max_age_seconds} s away")
    return body
