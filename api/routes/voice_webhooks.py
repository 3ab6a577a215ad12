"""Twilio's voice webhooks for the automated reminder calls: the status callback when a call
ends, and the `<Gather>` action when the borrower presses a key. No API key: each call is
authenticated by its `X-Twilio-Signature` over the exact URL and form parameters
(`api/webhook_signatures.py`) before anything is read; what it then does is
`service/voice_events.py`'s."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import Svc
from api.routes.webhooks import SIGNED_ERRORS, TWIML, provider_secrets
from api.webhook_signatures import verified_twilio_form
from service.voice_events import (
    GATHER_PATH,
    STATUS_PATH,
    CallStatusCallback,
    KeyPress,
    apply_call_status,
    apply_key_press,
)

router = APIRouter(tags=["webhooks"])


@router.post(STATUS_PATH, status_code=204, response_class=Response, responses=SIGNED_ERRORS,
             summary="Twilio voice status callback (CallSid, CallStatus, AnsweredBy, ErrorCode)")
async def twilio_voice_status(request: Request, svc: Svc) -> Response:
    params = await verified_twilio_form(request, provider_secrets(request, svc))
    sid, status = params.required("CallSid", "CallStatus")
    await apply_call_status(svc.pool, CallStatusCallback(
        sid, status, params.first("AnsweredBy"), params.first("ErrorCode")))
    return Response(status_code=204)


@router.post(GATHER_PATH, response_class=Response, responses={
    **SIGNED_ERRORS, 200: {"description": "TwiML: <Dial> the agents' line (1), confirm the "
                                          "opt-out from automated calls (9), or hang up",
                           "content": {TWIML: {"schema": {"type": "string"}}}}},
             summary="Twilio <Gather> action of a reminder call: 1 an agent, 9 no more calls")
async def twilio_voice_gather(request: Request, svc: Svc) -> Response:
    params = await verified_twilio_form(request, provider_secrets(request, svc))
    sid, digits = params.required("CallSid", "Digits", may_be_empty=("Digits",))
    answer = await apply_key_press(
        svc.pool, KeyPress(sid, digits, params.first("To"), params.first("From"),
                           params.first("Direction")),
        svc.connections.settings.voice_agent_number)
    return Response(answer.twiml, media_type=TWIML)
