"""Twilio's voice webhooks for the automated reminder calls: the status callback when a call
ends, and the `<Gather>` action when the borrower presses a key. No API key: each call is
authenticated by its `X-Twilio-Signature` over the exact URL and form parameters
(`api/webhook_signatures.py`) before anything is read; what it then does is
`service/voice_events.py`'s."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import Svc
from api.problems import Problem
from api.routes.webhooks import SIGNED_ERRORS, TWIML
from api.webhook_signatures import FormParams, verified_twilio_form
from service.provider_events import WebhookSecrets, webhook_secrets
from service.voice_events import (
    GATHER_PATH,
    STATUS_PATH,
    CallStatusCallback,
    KeyPress,
    apply_call_status,
    apply_key_press,
)

router = APIRouter(tags=["webhooks"])


def _secrets(request: Request, svc: Svc) -> WebhookSecrets:
    # Shared with api/routes/webhooks.py: read once per process, kept on the app.
    found: WebhookSecrets | None = getattr(request.app.state, "webhook_secrets", None)
    if found is None:
        found = webhook_secrets(svc.connections.settings)
        request.app.state.webhook_secrets = found
    return found


def _required(params: FormParams, *names: str) -> list[str]:
    values = [params.first(name) for name in names]
    for name, value in zip(names, values, strict=True):
        if value is None or (not value and name != "Digits"):
            raise Problem(400, "webhook_body", f"{' and '.join(names)} are required", field=name)
    return [value or "" for value in values]


@router.post(STATUS_PATH, status_code=204, response_class=Response, responses=SIGNED_ERRORS,
             summary="Twilio voice status callback (CallSid, CallStatus, AnsweredBy, ErrorCode)")
async def twilio_voice_status(request: Request, svc: Svc) -> Response:
    params = await verified_twilio_form(request, _secrets(request, svc))
    sid, status = _required(params, "CallSid", "CallStatus")
    await apply_call_status(svc.pool, CallStatusCallback(
        sid, status, params.first("AnsweredBy"), params.first("ErrorCode")))
    return Response(status_code=204)


@router.post(GATHER_PATH, response_class=Response, responses={
    **SIGNED_ERRORS, 200: {"description": "TwiML: <Dial> the agents' line (1), confirm the "
                                          "opt-out from automated calls (9), or hang up",
                           "content": {TWIML: {"schema": {"type": "string"}}}}},
             summary="Twilio <Gather> action of a reminder call: 1 an agent, 9 no more calls")
async def twilio_voice_gather(request: Request, svc: Svc) -> Response:
    params = await verified_twilio_form(request, _secrets(request, svc))
    sid, digits = _required(params, "CallSid", "Digits")
    answer = await apply_key_press(
        svc.pool, KeyPress(sid, digits, params.first("To"), params.first("From"),
                           params.first("Direction")),
        svc.connections.settings.voice_agent_number)
    return Response(answer.twiml, media_type=TWIML)
