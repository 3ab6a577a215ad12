"""The providers' webhooks: Twilio's message status callbacks and inbound messages, SendGrid's
Event Webhook. No API key: each call is authenticated by the provider's signature
(`api/webhook_signatures.py`) before anything is read; what it then does is
`service/provider_events.py`'s."""

from __future__ import annotations

import json
import logging
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.deps import Svc
from api.problems import MEDIA_TYPE, Problem
from api.responses import ProblemDetails
from api.webhook_signatures import verified_sendgrid_body, verified_twilio_form
from service.provider_events import (
    Applied,
    InboundMessage,
    StatusCallback,
    WebhookSecrets,
    apply_inbound,
    apply_sendgrid_events,
    apply_twilio_status,
    tell_cases,
    webhook_secrets,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

TWIML = "application/xml"


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "model": ProblemDetails,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


SIGNED_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem("the body is not what the provider sends"),
    401: _problem("no signature"),
    403: _problem("the signature does not match, or its timestamp is stale"),
    503: _problem("the provider's secret is not configured, or PostgreSQL is unreachable"),
}


class EventsApplied(BaseModel):
    applied: int
    duplicates: int


def provider_secrets(request: Request, svc: Svc) -> WebhookSecrets:
    """The providers' webhook secrets: read once per process, kept on the app (shared with
    `api/routes/voice_webhooks.py`)."""
    found: WebhookSecrets | None = getattr(request.app.state, "webhook_secrets", None)
    if found is None:
        found = webhook_secrets(svc.connections.settings)
        request.app.state.webhook_secrets = found
    return found


async def _tell(svc: Svc, secrets: WebhookSecrets, applied: Applied) -> None:
    if not (secrets.signal_cases and applied.reports):
        return
    try:
        await tell_cases(await svc.temporal(), applied.reports)
    except Exception as err:  # Temporal down: the rows are committed, the case is told nothing
        log.warning("delivery reports not signalled: %s", type(err).__name__)


def _twiml(message: str | None) -> Response:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>',
                    media_type=TWIML)


@router.post("/twilio/status", status_code=204, response_class=Response,
             responses=SIGNED_ERRORS,
             summary="Twilio message status callback (MessageSid, MessageStatus, ErrorCode)")
async def twilio_status(request: Request, svc: Svc) -> Response:
    secrets = provider_secrets(request, svc)
    params = await verified_twilio_form(request, secrets)
    sid, status = params.required("MessageSid", "MessageStatus")
    applied = await apply_twilio_status(svc.pool, StatusCallback(
        sid, status, params.first("ErrorCode"), params.first("To")))
    await _tell(svc, secrets, applied)
    return Response(status_code=204)


@router.post("/twilio/inbound", response_class=Response, responses={
    **SIGNED_ERRORS, 200: {"description": "TwiML: the confirmation or HELP answer, if any",
                           "content": {TWIML: {"schema": {"type": "string"}}}}},
             summary="Twilio inbound message: opt-out and opt-in keywords, HELP, replies")
async def twilio_inbound(request: Request, svc: Svc) -> Response:
    secrets = provider_secrets(request, svc)
    params = await verified_twilio_form(request, secrets)
    sid, sender = params.required("MessageSid", "From")
    answer = await apply_inbound(svc.pool, InboundMessage(sid, sender, params.first("Body") or ""),
                                 secrets, svc.connections.settings.state_dir)
    return _twiml(answer.reply)


@router.post("/sendgrid/events", response_model=EventsApplied, responses=SIGNED_ERRORS,
             summary="SendGrid Event Webhook (signed): a JSON array of events")
async def sendgrid_events(request: Request, svc: Svc) -> EventsApplied:
    secrets = provider_secrets(request, svc)
    body = await verified_sendgrid_body(request, secrets)
    try:
        events = json.loads(body)
    except ValueError:
        raise Problem(400, "webhook_body", "the body is not JSON") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Problem(400, "webhook_body", "the body is not a JSON array of events")
    applied = await apply_sendgrid_events(svc.pool, events)
    await _tell(svc, secrets, applied)
    return EventsApplied(applied=applied.applied, duplicates=applied.duplicates)
