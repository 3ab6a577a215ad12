"""What WeCom's callbacks to the lender do, once checked: a contact deleting the lender is an
opt-out from WeCom (issue 17).

The callback (infra/wecom_callback.py) is checked before anything is read into the database: the
msg_signature over [token, timestamp, nonce, Encrypt], a timestamp within WEBHOOK_MAX_AGE_SECONDS,
the decrypted message naming our corp id as its receiver (twice: the receive id and ToUserName).
Any failure is a `CallbackRefused` and nothing is written.

`change_external_contact` events:
- `del_follow_user`, the external contact deleted the staff member: the borrower left the
  lender's WeCom, an opt-out. `contact_suppressions` (channel `wecom`, kind `opt_out`, rule
  `wecom.contact_deleted_lender`) on the contact key `w:<hash>`;
- `del_external_contact`, the staff member deleted the contact: the channel cannot be used (kind
  `undeliverable`, rule `wecom.contact_removed_by_staff`).
`reserve_contact` refuses WeCom on every loan of that external contact while the row stands, so
the case's next WeCom step is skipped with the rule and falls back to SMS (the path STOP takes).
Each event is applied once: a `provider_events` row keyed by its content (WeCom retries a call it
got no answer to within five seconds). Other events are acknowledged and ignored. An external
user id is never stored or logged; its contact key stands for it.
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from contracts.channels import WECOM
from contracts.contact_keys import hashed
from infra import wecom_callback
from infra.settings import Settings
from infra.wecom_callback import CALLBACK_PATH, CallbackCryptoError, CallbackKeys
from service.provider_events import loans_of, suppress

__all__ = ["CALLBACK_PATH", "CONTACT_DELETED_RULE", "STAFF_DELETED_RULE", "CallbackKeys"]

CONTACT_DELETED_RULE: Final = "wecom.contact_deleted_lender"
STAFF_DELETED_RULE: Final = "wecom.contact_removed_by_staff"
CONTACT_EVENT: Final = "change_external_contact"
# ChangeType -> (suppression kind, rule, reason, event kind, actor)
DELETIONS: Final = {
    "del_follow_user": ("opt_out", CONTACT_DELETED_RULE,
                        "the borrower deleted the lender's staff member on WeCom",
                        "wecom_opt_out", "borrower"),
    "del_external_contact": ("undeliverable", STAFF_DELETED_RULE,
                             "the lender's staff member deleted the borrower on WeCom",
                             "wecom_contact_removed", "staff"),
}
MAX_BODY: Final = 64 * 1024  # WeCom's events are a few hundred bytes


class CallbackRefused(Exception):
    """A callback not from WeCom, or not for us: refused, nothing written. `kind` is the problem
    kind the surface answers with."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


@dataclass(frozen=True)
class CallbackQuery:
    """The query WeCom puts on every call to the callback URL."""

    msg_signature: str | None
    timestamp: str | None
    nonce: str | None


@dataclass(frozen=True)
class ContactEvent:
    change_type: str
    userid: str  # the staff member
    external_userid: str  # used only to derive the contact key, never kept
    created: int  # CreateTime, unix seconds


@dataclass(frozen=True)
class WeComApplied:
    kind: str  # the ChangeType, or "ignored"
    duplicate: bool = False
    loan_ids: tuple[str, ...] = ()


def callback_keys(settings: Settings) -> CallbackKeys | None:
    return settings.wecom.callback_keys()


def contact_key(external_userid: str) -> str:
    """The key the case counts and suppresses WeCom under (workflows/addresses.contact_key)."""
    return f"{WECOM.contact_prefix}:{hashed(external_userid)}"


def _signed(query: CallbackQuery) -> tuple[str, str, str]:
    """(msg_signature, timestamp, nonce), or 401 when one is missing."""
    if not (query.msg_signature and query.timestamp and query.nonce):
        raise CallbackRefused(401, "webhook_unsigned",
                              "a WeCom callback needs msg_signature, timestamp and nonce")
    return query.msg_signature, query.timestamp, query.nonce


def _opened(keys: CallbackKeys | None, query: CallbackQuery, encrypted: str,
            max_age_seconds: int, now: float) -> bytes:
    msg_signature, timestamp, nonce = _signed(query)
    if keys is None:
        raise CallbackRefused(503, "webhook_not_configured", "WeCom callbacks cannot be "
                              "verified: WECOM_CALLBACK_TOKEN or WECOM_CALLBACK_AES_KEY is not set")
    if not wecom_callback.signature_holds(keys, msg_signature, timestamp, nonce, encrypted):
        raise CallbackRefused(403, "webhook_signature", "the msg_signature does not match the call")
    # Read once known signed: a recorded call cannot be replayed later.
    if not timestamp.isdigit() or abs(now - int(timestamp)) > max_age_seconds:
        raise CallbackRefused(403, "webhook_stale",
                              f"the signed timestamp is more than {max_age_seconds} s away")
    try:
        message, receive_id = wecom_callback.decrypt(keys, encrypted)
    except CallbackCryptoError as err:
        raise CallbackRefused(400, "webhook_body", f"the message does not decrypt: {err}") from None
    if receive_id != keys.receive_id:
        raise CallbackRefused(403, "webhook_receiver", "the message is for another corp id")
    return message


def verify_url(keys: CallbackKeys | None, query: CallbackQuery, echostr: str | None,
               max_age_seconds: int, now: float | None = None) -> str:
    """WeCom's URL verification: the decrypted echostr, to answer with."""
    _signed(query)
    if not echostr:
        raise CallbackRefused(400, "webhook_body", "echostr is required")
    clock = time.time() if now is None else now
    return _opened(keys, query, echostr, max_age_seconds, clock).decode(errors="replace")


def _xml(text: bytes, what: str) -> ET.Element:
    """Parse WeCom's XML, which never declares a DTD: one that does is refused unread (no entity
    expansion, whatever the parser would allow)."""
    if len(text) > MAX_BODY or b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
        raise CallbackRefused(400, "webhook_body", f"the {what} is not WeCom's XML")
    try:
        # No DTD (refused above), and expat 2.5 limits entity expansion anyway.
        return ET.fromstring(text)
    except ET.ParseError:
        raise CallbackRefused(400, "webhook_body", f"the {what} is not XML") from None


def _field(root: ET.Element, name: str) -> str:
    return (root.findtext(name) or "").strip()


def open_event(keys: CallbackKeys | None, query: CallbackQuery, body: bytes,
               max_age_seconds: int, now: float | None = None) -> ContactEvent | None:
    """The event a checked callback carries; None for events other than a deletion."""
    _signed(query)
    encrypted = _field(_xml(body, "body"), "Encrypt")
    if not encrypted:
        raise CallbackRefused(400, "webhook_body", "Encrypt is required")
    clock = time.time() if now is None else now
    message = _xml(_opened(keys, query, encrypted, max_age_seconds, clock), "message")
    assert keys is not None  # _opened refused otherwise
    if _field(message, "ToUserName") not in ("", keys.receive_id):
        raise CallbackRefused(403, "webhook_receiver", "the message is for another corp id")
    change = _field(message, "ChangeType")
    if _field(message, "Event") != CONTACT_EVENT or change not in DELETIONS:
        return None
    external, created = _field(message, "ExternalUserID"), _field(message, "CreateTime")
    if not external or not created.isdigit():
        raise CallbackRefused(400, "webhook_body", "ExternalUserID and CreateTime are required")
    return ContactEvent(change, _field(message, "UserID"), external, int(created))


async def apply_contact_event(pool: asyncpg.Pool, event: ContactEvent,
                              at: datetime | None = None) -> WeComApplied:
    """Suppress WeCom for the external contact and note it on each of its loans, once."""
    kind, rule, reason, event_kind, actor = DELETIONS[event.change_type]
    key = contact_key(event.external_userid)
    occurred = datetime.fromtimestamp(event.created, UTC)
    event_key = hashlib.sha256(
        f"{event.change_type}|{event.userid}|{key}|{event.created}".encode()).hexdigest()[:32]
    source = f"wecom:{event.change_type}:{event_key}"
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """
            INSERT INTO provider_events (provider, event_key, kind, contact_key, occurred_at)
            VALUES ('wecom',$1,$2,$3,$4) ON CONFLICT (provider, event_key) DO NOTHING
            RETURNING id
            """, event_key, event.change_type, key, occurred)
        loans = await loans_of(conn, key)
        if inserted is None:
            return WeComApplied(event.change_type, duplicate=True, loan_ids=tuple(loans))
        await suppress(conn, key, WECOM.name, kind, rule, reason, source)
        await conn.executemany(
            """
            INSERT INTO events (idempotency_key, loan_id, kind, actor, summary, rule, detail,
                occurred_at)
            VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8) ON CONFLICT DO NOTHING
            """,
            [(f"{source}/{loan}", loan, event_kind, actor, reason, rule,
              json.dumps({"provider_event": inserted}), at or occurred) for loan in loans])
    return WeComApplied(event.change_type, loan_ids=tuple(loans))
