"""What Twilio's voice webhooks do, once their signature is checked: a reminder call's status
callback, and the key the borrower presses in its `<Gather>` (`activities/channels/voice.py`
places the calls and points both webhooks here).

- A status callback (CallSid, CallStatus, AnsweredBy, ErrorCode) is applied once per
  (CallSid, CallStatus): a `provider_events` row keyed `<CallSid>:<CallStatus>`. The contact row
  the call was made under, found through the outbox's provider id, gets the call's status as its
  delivery status and, once the call has ended, its outcome: `connected`, or `unanswered` for a
  call nobody or a machine answered (the same reading as the case's own follow-up,
  `outcome_of`). A late "ringing" never overwrites an ended call.
- A key press: 1 connects the agents' line (`<Dial>` VOICE_AGENT_NUMBER); 9 stops automated
  calls to that number, a `contact_suppressions` row (channel `voice`, kind `opt_out`, rule
  `voice.opt_out`) that `reserve_contact` honours on every loan of the number, as it does an SMS
  opt-out; any other key ends the call. Each press is recorded once (`gather:<CallSid>:<Digits>`);
  a repeat gets the same answer and changes nothing.

A number is never stored or logged: the contact key (`p:<hash>`) stands for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg
from twilio.twiml.voice_response import VoiceResponse

from activities.channels.voice import (
    AGENT_DIGIT,
    GATHER_PATH,
    OPT_OUT_DIGIT,
    STATUS_PATH,
    VOICES,
    outcome_of,
)
from contracts.contact_keys import phone_key
from service.provider_events import loans_of, suppress

__all__ = ["GATHER_PATH", "STATUS_PATH", "VOICE_OPT_OUT_RULE"]

VOICE_OPT_OUT_RULE: Final = "voice.opt_out"
# The statuses a call ends with (Twilio's status callback "completed" event).
CALL_ENDED: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})

CONFIRM_VOICE_OPT_OUT: Final = "You will get no more automated calls from us. Goodbye."
CONFIRM_VOICE_OPT_OUT_ZH: Final = "您将不会再收到我们的自动语音电话。再见。"
CONNECTING: Final = "Connecting you to an agent."
CONNECTING_ZH: Final = "正在为您转接人工客服。"


@dataclass(frozen=True)
class CallStatusCallback:
    call_sid: str
    status: str
    answered_by: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class CallApplied:
    """What one status callback did: `duplicate` when seen before; the outcome written, if any."""

    duplicate: bool
    loan_id: str | None = None
    delivery_status: str | None = None
    outcome: str | None = None


async def _contact_of_call(conn: asyncpg.Connection, call_sid: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT c.idempotency_key, c.loan_id, c.contact_key
        FROM outbox o JOIN contacts c ON c.idempotency_key = o.outbox_key
        WHERE o.provider_id = $1 LIMIT 1
        """, call_sid)


async def _recorded(conn: asyncpg.Connection, event_key: str, kind: str, call_sid: str,
                    contact: asyncpg.Record | None, contact_key: str | None,
                    error_code: str | None, at: datetime) -> bool:
    """Record the callback in provider_events; False if it was recorded before."""
    inserted = await conn.fetchval(
        """
        INSERT INTO provider_events (provider, event_key, kind, provider_id, outbox_key, loan_id,
            contact_key, error_code, occurred_at)
        VALUES ('twilio',$1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING id
        """,
        event_key, kind, call_sid, contact["idempotency_key"] if contact else None,
        contact["loan_id"] if contact else None, contact_key, error_code, at)
    return inserted is not None


async def apply_call_status(pool: asyncpg.Pool, cb: CallStatusCallback,
                            at: datetime | None = None) -> CallApplied:
    at = at or datetime.now(UTC)
    status = cb.status.strip().lower()
    answered_by = (cb.answered_by or "").strip().lower() or None
    code = (cb.error_code or "").strip() or None
    async with pool.acquire() as conn, conn.transaction():
        contact = await _contact_of_call(conn, cb.call_sid)
        if not await _recorded(conn, f"{cb.call_sid}:{status}", f"call_{status}", cb.call_sid,
                               contact, contact["contact_key"] if contact else None, code, at):
            return CallApplied(duplicate=True)
        if contact is None:  # not one of our calls (or its send is not marked yet): kept only
            return CallApplied(duplicate=False)
        ended = status in CALL_ENDED
        outcome = outcome_of(status, answered_by).outcome if ended else None
        written = await conn.fetchval(
            """
            UPDATE contacts SET delivery_status = $2, delivery_error = $3, delivery_at = $4,
                provider_id = COALESCE(provider_id, $5), outcome = COALESCE($6, outcome)
            WHERE idempotency_key = $1
              AND ($7 OR delivery_status IS NULL OR NOT delivery_status = ANY($8::text[]))
            RETURNING 1
            """,
            contact["idempotency_key"], status, f"twilio_{code}" if code else None, at,
            cb.call_sid, outcome, ended, sorted(CALL_ENDED))
    if written is None:
        return CallApplied(duplicate=False, loan_id=contact["loan_id"])
    return CallApplied(duplicate=False, loan_id=contact["loan_id"], delivery_status=status,
                       outcome=outcome)


# ------------------------------------------------------------------------------ the key press


@dataclass(frozen=True)
class KeyPress:
    call_sid: str
    digits: str
    to: str | None = None  # the borrower on our outbound call; used only for the contact key
    from_number: str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class GatherAnswer:
    kind: str  # "agent", "opt_out" or "other"
    twiml: str
    duplicate: bool = False
    loan_ids: tuple[str, ...] = ()


def _borrower_number(press: KeyPress) -> str | None:
    inbound = (press.direction or "outbound").startswith("inbound")
    return press.from_number if inbound else press.to


def _say(response: VoiceResponse, english: str, chinese: str, zh: bool) -> None:
    voice, language = VOICES["zh-CN" if zh else "en"]
    response.say(chinese if zh else english, voice=voice, language=language)


def gather_twiml(kind: str, agent_number: str, *, zh: bool = False) -> str:
    """The answer to a key press: connect the agents' line, confirm the opt-out, or hang up."""
    response = VoiceResponse()
    if kind == "agent":
        _say(response, CONNECTING, CONNECTING_ZH, zh)
        response.dial(agent_number)
    elif kind == "opt_out":
        _say(response, CONFIRM_VOICE_OPT_OUT, CONFIRM_VOICE_OPT_OUT_ZH, zh)
    response.hangup()
    return str(response)


async def apply_key_press(pool: asyncpg.Pool, press: KeyPress, agent_number: str,
                          at: datetime | None = None) -> GatherAnswer:
    at = at or datetime.now(UTC)
    digits = press.digits.strip()
    kind = {AGENT_DIGIT: "agent", OPT_OUT_DIGIT: "opt_out"}.get(digits, "other")
    number = _borrower_number(press)
    twiml = gather_twiml(kind, agent_number, zh=(number or "").startswith("+86"))
    async with pool.acquire() as conn, conn.transaction():
        contact = await _contact_of_call(conn, press.call_sid)
        contact_key = contact["contact_key"] if contact else (
            phone_key(number) if number else None)
        loans = await loans_of(conn, contact_key) if contact_key else []
        if not await _recorded(conn, f"gather:{press.call_sid}:{digits}", f"gather_{kind}",
                               press.call_sid, contact, contact_key, None, at):
            return GatherAnswer(kind, twiml, duplicate=True, loan_ids=tuple(loans))
        if kind == "other" or contact_key is None:
            return GatherAnswer(kind, twiml, loan_ids=tuple(loans))
        source = f"twilio:gather:{press.call_sid}"
        if kind == "opt_out":
            await suppress(conn, contact_key, "voice", "opt_out", VOICE_OPT_OUT_RULE,
                           "the borrower pressed 9 in an automated call", source)
        summary = ("borrower opted out of automated calls (pressed 9)" if kind == "opt_out"
                   else "borrower asked for an agent in an automated call (pressed 1)")
        await conn.executemany(
            """
            INSERT INTO events (idempotency_key, loan_id, kind, actor, summary, rule, detail,
                occurred_at)
            VALUES ($1,$2,$3,'borrower',$4,$5,$6::jsonb,$7) ON CONFLICT DO NOTHING
            """,
            [(f"{source}/{loan}", loan, f"voice_{kind}", summary,
              VOICE_OPT_OUT_RULE if kind == "opt_out" else None,
              json.dumps({"call_sid": press.call_sid}), at) for loan in loans])
    return GatherAnswer(kind, twiml, loan_ids=tuple(loans))
