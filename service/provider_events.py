"""What the providers' webhooks do, once their signature is checked: Twilio's status callbacks and
inbound messages, SendGrid's events.

Each callback is applied once, in one transaction: a status callback keyed by (MessageSid,
MessageStatus), an inbound message by its MessageSid, a SendGrid event by its sg_event_id. An
address is never stored or logged: the contact key (`p:<hash>`, `e:<hash>`) stands for it, and a
reply's text is kept encrypted or not at all.

An opt-out or a suppressed address is a `contact_suppressions` row per contact key and channel,
so it holds across every loan of that number or address: `reserve_contact` refuses the channel
while the row is not lifted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.client import Client
from temporalio.service import RPCError

from activities.database.delivery_status import (
    NUMBER_UNUSABLE_CODES,
    SENDGRID_EVENTS,
    STATUS_RANK,
    lock_message,
    sendgrid_report,
    set_delivery,
    twilio_report,
)
from contracts.contact_keys import (
    CN_OPT_OUT_RULE,
    EMAIL_SUPPRESSED_RULE,
    OPT_OUT_RULE,
    SMS_UNDELIVERABLE_RULE,
    email_key,
    phone_key,
)
from contracts.messages import DeliveryReport
from contracts.names import Signal, workflow_id_for
from infra.codec import load_keys_from_env, parse_keys
from infra.emulator import twilio as twilio_emulator
from infra.settings import Settings
from infra.webhook_keys import local_key_pair

log = logging.getLogger(__name__)

# The single-word keywords, compared after trimming and upper-casing.
OPT_OUT_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
CN_OPT_OUT_WORDS: Final = frozenset({"退订", "TD", "T"})
OPT_IN_WORDS: Final = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS: Final = frozenset({"HELP", "INFO"})

# Twilio's error code for a recipient who unsubscribed (blocked until they send START). The
# codes of a number that cannot take SMS, and the delivery statuses' order, are
# activities/database/delivery_status.py's (also applied there to a report that came early).
UNSUBSCRIBED_CODE: Final = "21610"
_REPLY_AAD: Final = b"inbound_reply"
DEV_KEY_FILE: Final = "encryption.key"  # the local stack's, as service.connection names it

CONFIRM_OPT_OUT: Final = "You will get no more text messages from us. Reply START to resume."
CONFIRM_OPT_OUT_ZH: Final = "您已退订，我们将不再向您发送短信。回复 START 可恢复。"  # noqa: RUF001
CONFIRM_OPT_IN: Final = "You will get text messages from us again. Reply STOP to stop."


@dataclass(frozen=True)
class WebhookSecrets:
    """What checking and answering the providers' calls needs, read once per process."""

    twilio_auth_token: str | None
    sendgrid_public_key: str | None  # base64 DER, as SendGrid shows it
    base_url: str | None
    max_age_seconds: int
    signal_cases: bool
    help_text: str
    help_text_zh: str


def webhook_secrets(settings: Settings) -> WebhookSecrets:
    """The configured secrets; without provider credentials, the local stack's (the emulator's
    auth token, the key pair in STATE_DIR)."""
    token = settings.twilio.auth_token if settings.twilio.configured else twilio_emulator.AUTH_TOKEN
    public_key = settings.sendgrid.webhook_public_key
    if public_key is None and not settings.sendgrid.configured:
        public_key = local_key_pair(settings.state_dir).public_key_b64
    hooks = settings.webhook
    return WebhookSecrets(token or None, public_key, hooks.base_url, hooks.max_age_seconds,
                          hooks.signal_cases, hooks.help_text, hooks.help_text_zh)


# ----------------------------------------------------------------------------- Twilio status


@dataclass(frozen=True)
class StatusCallback:
    message_sid: str
    status: str
    error_code: str | None = None
    to: str | None = None  # used only to derive the contact key, never kept


@dataclass
class Applied:
    """What a batch of callbacks did: applied, or seen before; and the reports for the cases."""

    applied: int = 0
    duplicates: int = 0
    reports: list[DeliveryReport] = field(default_factory=list)


async def _contact_of_message(conn: asyncpg.Connection, provider_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT c.idempotency_key, c.loan_id, c.step_id, c.channel, c.contact_key
        FROM outbox o JOIN contacts c ON c.idempotency_key = o.outbox_key
        WHERE o.provider_id = $1 LIMIT 1
        """, provider_id)


async def _contact_of_key(conn: asyncpg.Connection, outbox_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT idempotency_key, loan_id, step_id, channel, contact_key FROM contacts "
        "WHERE idempotency_key = $1", outbox_key)


async def _event(conn: asyncpg.Connection, provider: str, event_key: str, kind: str, *,
                 provider_id: str | None, contact: asyncpg.Record | None, contact_key: str | None,
                 error_code: str | None, at: datetime, outbox_key: str | None = None) -> bool:
    """Record the event; False if it was recorded before (nothing else is done then). Without
    its contact row yet (a report that overtook the send) it is kept with no loan, and the
    message's `outbox_key` if known, until the row is written (delivery_status.py links it)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO provider_events (provider, event_key, kind, provider_id, outbox_key, loan_id,
            contact_key, error_code, occurred_at)
        VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING id
        """,
        provider, event_key, kind, provider_id,
        contact["idempotency_key"] if contact else outbox_key,
        contact["loan_id"] if contact else None, contact_key, error_code, at)
    return inserted is not None


async def suppress(conn: asyncpg.Connection | asyncpg.Pool, contact_key: str, channel: str,
                   kind: str, rule: str, reason: str, source: str) -> bool:
    """Stop `channel` to this address; True if that is new (not already in force)."""
    row = await conn.fetchval(
        """
        INSERT INTO contact_suppressions (contact_key, channel, kind, rule, reason, source)
        VALUES ($1,$2,$3,$4,$5,$6)
        ON CONFLICT (contact_key, channel, kind) DO UPDATE SET
            rule = EXCLUDED.rule, reason = EXCLUDED.reason, source = EXCLUDED.source,
            created_at = now(), lifted_at = NULL, lifted_by = NULL
        WHERE contact_suppressions.lifted_at IS NOT NULL
        RETURNING 1
        """, contact_key, channel, kind, rule, reason, source)
    return row is not None


async def lift(conn: asyncpg.Connection | asyncpg.Pool, contact_key: str, channel: str,
               kind: str, by: str) -> bool:
    """Lift a suppression in force; True if there was one."""
    row = await conn.fetchval(
        """
        UPDATE contact_suppressions SET lifted_at = now(), lifted_by = $4
        WHERE contact_key = $1 AND channel = $2 AND kind = $3 AND lifted_at IS NULL RETURNING 1
        """, contact_key, channel, kind, by)
    return row is not None


async def apply_twilio_status(pool: asyncpg.Pool, cb: StatusCallback,
                              at: datetime | None = None) -> Applied:
    at = at or datetime.now(UTC)
    status = cb.status.strip().lower()
    code = (cb.error_code or "").strip() or None
    out = Applied()
    async with pool.acquire() as conn, conn.transaction():
        # First: the contact row written as sent takes the same lock (delivery_status.py).
        await lock_message(conn, cb.message_sid)
        contact = await _contact_of_message(conn, cb.message_sid)
        contact_key = contact["contact_key"] if contact else (
            phone_key(cb.to) if cb.to else None)
        outbox_key = None if contact else await conn.fetchval(
            "SELECT outbox_key FROM outbox WHERE provider_id = $1 LIMIT 1", cb.message_sid)
        if not await _event(conn, "twilio", f"{cb.message_sid}:{status}", status,
                            provider_id=cb.message_sid, contact=contact, contact_key=contact_key,
                            error_code=code, at=at, outbox_key=outbox_key):
            out.duplicates += 1
            return out
        out.applied += 1
        if contact is not None:
            await set_delivery(conn, contact["idempotency_key"], status,
                               f"twilio_{code}" if code else None, cb.message_sid, at)
        if status not in ("undelivered", "failed") or contact_key is None:
            return out
        unusable = code in NUMBER_UNUSABLE_CODES
        source = f"twilio:{cb.message_sid}:{status}"
        if unusable:
            assert code is not None
            await suppress(conn, contact_key, "sms", "undeliverable", SMS_UNDELIVERABLE_RULE,
                           f"Twilio {code}: {NUMBER_UNUSABLE_CODES[code]}", source)
        elif code == UNSUBSCRIBED_CODE:
            await suppress(conn, contact_key, "sms", "opt_out", OPT_OUT_RULE,
                           "Twilio 21610: the recipient unsubscribed", source)
        # Anything else (30003 unreachable, 30007 filtered, ...) is recorded: the next step tries
        # again.
        report = twilio_report(contact, status, code, at) if contact is not None else None
        if report is not None:
            out.reports.append(report)
    return out


# ---------------------------------------------------------------------------- Twilio inbound


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    from_number: str
    body: str


@dataclass(frozen=True)
class InboundAnswer:
    kind: str  # "opt_out", "opt_in", "help", "reply"
    reply: str | None  # the text to answer with (TwiML), if any
    duplicate: bool = False
    loan_ids: tuple[str, ...] = ()


_TRAILING: Final = ".!\u3002\uff01"  # full stops and exclamation marks, ASCII and CJK


def keyword(body: str) -> str:
    """The message as a keyword: trimmed, trailing punctuation dropped, upper case."""
    return body.strip().rstrip(_TRAILING).strip().upper()


def keyword_kind(body: str) -> str:
    word = keyword(body)
    if word in OPT_OUT_WORDS or word in CN_OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    if word in HELP_WORDS:
        return "help"
    return "reply"


def _reply_keys(state_dir: Path | None) -> dict[str, bytes] | None:
    """The collections keys, else the local stack's key file if there is one."""
    keys = load_keys_from_env()
    dev_file = state_dir / DEV_KEY_FILE if state_dir is not None else None
    if keys is None and dev_file is not None and dev_file.is_file():
        keys = parse_keys(dev_file.read_text(), source=str(dev_file))
    return keys


def encrypt_reply(text: str, keys: Mapping[str, bytes] | None) -> tuple[bytes | None, str | None]:
    """AES-GCM under the active (first) collections key: nonce + ciphertext, and the key id."""
    if not keys:
        return None, None
    kid, key = next(iter(keys.items()))
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, text.encode(), _REPLY_AAD), kid


def decrypt_reply(cipher: bytes, kid: str, keys: Mapping[str, bytes]) -> str:
    return AESGCM(keys[kid]).decrypt(cipher[:12], cipher[12:], _REPLY_AAD).decode()


async def loans_of(conn: asyncpg.Connection, contact_key: str) -> list[str]:
    """Every loan the contact key was reached for or is the borrower of."""
    rows = await conn.fetch(
        "SELECT loan_id FROM contacts WHERE contact_key = $1 "
        "UNION SELECT loan_id FROM cases WHERE borrower_key = $1 ORDER BY 1", contact_key)
    return [r["loan_id"] for r in rows]


async def apply_inbound(pool: asyncpg.Pool, msg: InboundMessage, secrets: WebhookSecrets,
                        state_dir: Path | None = None) -> InboundAnswer:
    """A borrower's text: an opt-out, an opt-in, HELP, or a reply for the agents."""
    kind = keyword_kind(msg.body)
    word = keyword(msg.body)
    contact_key = phone_key(msg.from_number)
    cipher, kid = (encrypt_reply(msg.body, _reply_keys(state_dir)) if kind == "reply"
                   else (None, None))
    async with pool.acquire() as conn, conn.transaction():
        loans = await loans_of(conn, contact_key)
        inserted = await conn.fetchval(
            """
            INSERT INTO inbound_replies (message_sid, contact_key, loan_ids, kind, body_cipher,
                key_id, body_chars, status)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (message_sid) DO NOTHING RETURNING id
            """,
            msg.message_sid, contact_key, loans, kind, cipher, kid, len(msg.body),
            "open" if kind == "reply" else "done")
        if inserted is None:
            return InboundAnswer(kind, None, duplicate=True, loan_ids=tuple(loans))
        reply: str | None = None
        source = f"twilio:inbound:{msg.message_sid}"
        if kind == "opt_out":
            chinese = word in CN_OPT_OUT_WORDS
            if await suppress(conn, contact_key, "sms", "opt_out",
                              CN_OPT_OUT_RULE if chinese else OPT_OUT_RULE,
                              f"the borrower replied {'a Chinese' if chinese else 'an'} "
                              "opt-out keyword", source):
                reply = CONFIRM_OPT_OUT_ZH if chinese else CONFIRM_OPT_OUT
        elif kind == "opt_in":
            if await lift(conn, contact_key, "sms", "opt_out", source):
                reply = CONFIRM_OPT_IN
        elif kind == "help":
            reply = secrets.help_text
        summary = {"opt_out": "borrower opted out of SMS", "opt_in": "borrower opted in to SMS",
                   "help": "borrower asked for help by SMS",
                   "reply": "borrower replied by SMS (for an agent)"}[kind]
        await conn.executemany(
            """
            INSERT INTO events (idempotency_key, loan_id, kind, actor, summary, rule, detail,
                occurred_at)
            VALUES ($1,$2,$3,'borrower',$4,$5,$6::jsonb,now()) ON CONFLICT DO NOTHING
            """,
            [(f"{source}/{loan}", loan, f"sms_{kind}", summary,
              (CN_OPT_OUT_RULE if word in CN_OPT_OUT_WORDS else OPT_OUT_RULE)
              if kind in ("opt_out", "opt_in") else None,
              json.dumps({"inbound_reply": inserted})) for loan in loans])
    return InboundAnswer(kind, reply, loan_ids=tuple(loans))


# ---------------------------------------------------------------------------- SendGrid events

def _event_id(event: Mapping[str, Any]) -> str:
    given = event.get("sg_event_id")
    if isinstance(given, str) and given:
        return given
    # SendGrid always sends one; without it, the event's own content identifies it.
    return "sha256:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()


def _at(event: Mapping[str, Any]) -> datetime:
    stamp = event.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return datetime.fromtimestamp(stamp, UTC)
    return datetime.now(UTC)


async def apply_sendgrid_events(pool: asyncpg.Pool, events: Sequence[Mapping[str, Any]]) -> Applied:
    out = Applied()
    for event in events:
        await _apply_sendgrid_event(pool, event, out)
    return out


async def _apply_sendgrid_event(pool: asyncpg.Pool, event: Mapping[str, Any], out: Applied) -> None:
    name = str(event.get("event", ""))
    kind = "blocked" if name == "bounce" and event.get("type") == "blocked" else name
    if kind not in SENDGRID_EVENTS:  # an event we do not act on: acknowledged, ignored
        return
    status, suppression = SENDGRID_EVENTS[kind]
    at = _at(event)
    outbox_key = event.get("outbox_key")
    message_id = event.get("sg_message_id")
    email = event.get("email")
    code = str(event.get("status") or event.get("type") or "") or None
    known_key = outbox_key if isinstance(outbox_key, str) and outbox_key else None
    async with pool.acquire() as conn, conn.transaction():
        if known_key is not None:  # first: as the contact row written as sent does
            await lock_message(conn, known_key)
        contact = await _contact_of_key(conn, known_key) if known_key is not None else None
        contact_key = contact["contact_key"] if contact else (
            email_key(email) if isinstance(email, str) and email else None)
        if not await _event(conn, "sendgrid", _event_id(event), kind,
                            provider_id=message_id if isinstance(message_id, str) else None,
                            contact=contact, contact_key=contact_key, error_code=code, at=at,
                            outbox_key=known_key):
            out.duplicates += 1
            return
        out.applied += 1
        if contact is not None and status is not None:
            await set_delivery(conn, contact["idempotency_key"], status,
                               f"sendgrid_{kind}" if status not in STATUS_RANK else None,
                               message_id if isinstance(message_id, str) else None, at)
        if contact_key is None:
            return
        source = f"sendgrid:{_event_id(event)}"
        if kind == "group_resubscribe":
            await lift(conn, contact_key, "email", "unsubscribe", source)
        elif suppression is not None:
            await suppress(conn, contact_key, "email", suppression, EMAIL_SUPPRESSED_RULE,
                           f"SendGrid {kind}" + (f" ({code})" if code and kind != "dropped"
                                                 else ""), source)
        report = sendgrid_report(contact, kind, at) if contact is not None else None
        if report is not None:
            out.reports.append(report)


# --------------------------------------------------------------------------- telling the case


async def tell_cases(client: Client, reports: Sequence[DeliveryReport]) -> int:
    """Signal each case a message of which was not delivered; a case gone is skipped. The
    webhook's rows are already committed: a signal that does not get through loses nothing the
    database does not hold."""
    sent = 0
    for report in reports:
        handle = client.get_workflow_handle(workflow_id_for(report.loan_id))
        try:
            await handle.signal(Signal.DELIVERY_FAILED, report)
            sent += 1
        except RPCError as err:
            log.warning("delivery report not signalled to a case: %s", err.status.name)
    return sent


async def active_suppressions(pool: asyncpg.Pool, contact_key: str) -> list[dict[str, str]]:
    """The suppressions in force for one contact key (an operator's or a test's view)."""
    rows = await pool.fetch(
        "SELECT channel, kind, rule, reason FROM contact_suppressions "
        "WHERE contact_key = $1 AND lifted_at IS NULL ORDER BY channel, kind", contact_key)
    return [dict(r) for r in rows]
