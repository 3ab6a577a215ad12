"""WeCom's (企业微信) callback URL: the GET WeCom makes to verify it, and the events it POSTs,
signed and encrypted with the callback's Token and EncodingAESKey. No API key: each call is checked
(`service/wecom_events.py`) before anything is read; a contact deleting the lender then stops
WeCom to that contact."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from api.deps import Svc
from api.problems import Problem
from api.routes.webhooks import SIGNED_ERRORS, provider_secrets
from service.wecom_events import (
    CALLBACK_PATH,
    CallbackKeys,
    CallbackQuery,
    CallbackRefused,
    apply_contact_event,
    callback_keys,
    open_event,
    verify_url,
)

router = APIRouter(tags=["webhooks"])
# WeCom takes "success" (or an empty answer) within five seconds as received.
RECEIVED = "success"


def _keys(request: Request, svc: Svc) -> CallbackKeys | None:
    """Read once per process, kept on the app."""
    if not hasattr(request.app.state, "wecom_callback_keys"):
        request.app.state.wecom_callback_keys = callback_keys(svc.connections.settings)
    found: CallbackKeys | None = request.app.state.wecom_callback_keys
    return found


def _problem(err: CallbackRefused) -> Problem:
    headers = {"Retry-After": "60"} if err.status == 503 else None
    return Problem(err.status, err.kind, err.detail, headers=headers)


def _query(msg_signature: str | None, timestamp: str | None, nonce: str | None) -> CallbackQuery:
    return CallbackQuery(msg_signature, timestamp, nonce)


@router.get(CALLBACK_PATH, response_class=PlainTextResponse, responses=SIGNED_ERRORS,
            summary="WeCom callback URL verification: answers the decrypted echostr")
async def wecom_verify_url(request: Request, svc: Svc,
                           msg_signature: str | None = Query(None),
                           timestamp: str | None = Query(None), nonce: str | None = Query(None),
                           echostr: str | None = Query(None)) -> PlainTextResponse:
    try:
        echo = verify_url(_keys(request, svc), _query(msg_signature, timestamp, nonce), echostr,
                          provider_secrets(request, svc).max_age_seconds)
    except CallbackRefused as err:
        raise _problem(err) from None
    return PlainTextResponse(echo)


@router.post(CALLBACK_PATH, response_class=PlainTextResponse, responses=SIGNED_ERRORS,
             summary="WeCom callback event (encrypted XML): a contact deleting the lender")
async def wecom_event(request: Request, svc: Svc, msg_signature: str | None = Query(None),
                      timestamp: str | None = Query(None),
                      nonce: str | None = Query(None)) -> Response:
    try:
        event = open_event(_keys(request, svc), _query(msg_signature, timestamp, nonce),
                           await request.body(), provider_secrets(request, svc).max_age_seconds)
    except CallbackRefused as err:
        raise _problem(err) from None
    if event is not None:
        await apply_contact_event(svc.pool, event)
    return PlainTextResponse(RECEIVED)
