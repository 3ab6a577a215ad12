"""SendGrid's v3 mail send and the Email Activity feed subset the outbox reconciles against.

Any bearer key is accepted; each recipient becomes one record, as the activity feed reports them.

With webhooks configured (`ProviderEmulator.configure_webhooks`), it posts Event Webhook batches
as SendGrid does: a JSON array (custom_args as top-level keys, an sg_event_id each), signed with
ECDSA P-256 over timestamp + raw body. Every message gets "processed" then "delivered"; an
address told to bounce gets "bounce" (type "bounce" or "blocked"), and after a hard bounce, a spam
report or an unsubscribe, SendGrid's suppression list drops later messages ("dropped").
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from infra.emulator.faults import EMAIL, Fault, norm

if TYPE_CHECKING:
    from infra.emulator.server import ProviderEmulator

API_KEY = "SG.emulator"  # the local stack's key: any non-empty key will do
# Where our webhook lives under the configured base URL (api/routes/webhooks.py).
SENDGRID_EVENTS_PATH = "/webhooks/sendgrid/events"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
BOUNCE_TYPES = {"bounce": "5.1.1", "blocked": "4.7.1"}  # hard, soft: the SMTP status reported
PLAYABLE = {"bounce", "blocked", "dropped", "spamreport", "unsubscribe", "group_unsubscribe",
            "group_resubscribe", "delivered"}
# What puts an address on SendGrid's suppression list (later messages are dropped).
SUPPRESSING = {"bounce", "spamreport", "unsubscribe", "group_unsubscribe"}


class SendGridApi:
    def __init__(self, emulator: ProviderEmulator) -> None:
        self._emu = emulator
        self._bouncing: dict[str, str] = {}  # address -> "bounce" or "blocked"
        self._suppressed: dict[str, str] = {}  # address -> why (SendGrid drops its messages)
        self._last_batch: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/mail/send", self._send),
            web.get("/v3/messages", self._activity),
            web.post("/_emulator/sendgrid/event", self._ctl_event),
            web.post("/_emulator/sendgrid/redeliver", self._ctl_redeliver),
        ]

    def reset(self) -> None:
        self._bouncing.clear()
        self._suppressed.clear()
        self._last_batch = []

    # ----- what a test or the demo plays -----------------------------------------------------
    def bounce(self, address: str, kind: str = "bounce") -> None:
        """Later messages to `address` bounce (`bounce`: hard, `blocked`: soft)."""
        if kind not in BOUNCE_TYPES:
            raise ValueError(f"bounce type must be one of {sorted(BOUNCE_TYPES)}")
        self._bouncing[norm(address)] = kind

    async def play(self, address: str, event: str) -> int:
        """Report `event` for the latest message to `address` now (a late bounce, the borrower
        marking it spam or unsubscribing); the HTTP status our webhook answered, 0 if none."""
        if event not in PLAYABLE:
            raise ValueError(f"event must be one of {sorted(PLAYABLE)}")
        sent = [m for m in self._emu.stored(EMAIL) if norm(m["to"]) == norm(address)]
        if not sent:
            raise ValueError("no message to that address yet")
        name, kind = ("bounce", event) if event in BOUNCE_TYPES else (event, None)
        return await self._deliver_events([self._event(sent[-1], name, kind)])

    async def redeliver(self) -> int:
        """Post the last batch again, as SendGrid does when it is not sure it arrived."""
        return await self._deliver_events(self._last_batch) if self._last_batch else 0

    def _event(self, record: dict[str, Any], name: str, bounce: str | None = None,
               reason: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            **record["custom_args"], "email": record["to"], "timestamp": int(time.time()),
            "event": name, "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": record["id"], "smtp-id": f"<{record['id']}@emulator>",
            "category": list(record.get("categories") or [])}
        if bounce is not None:
            event.update(type=bounce, status=BOUNCE_TYPES[bounce],
                         reason=f"{BOUNCE_TYPES[bounce]} mailbox unavailable")
            if bounce == "bounce":
                self._suppressed[norm(record["to"])] = "Bounced Address"
        elif name == "dropped":
            event["reason"] = reason or "Bounced Address"
        elif name in SUPPRESSING:
            self._suppressed[norm(record["to"])] = "Unsubscribed Address"
        elif name == "group_resubscribe":
            self._suppressed.pop(norm(record["to"]), None)
        return event

    async def _report(self, records: list[dict[str, Any]]) -> None:
        """The events of one send, in one batch, a moment after it was accepted."""
        targets = self._emu.webhooks
        if targets is None:
            return
        await asyncio.sleep(targets.delay_seconds)
        events = []
        for record in records:
            address = norm(record["to"])
            if address in self._suppressed:
                events.append(self._event(record, "dropped", reason=self._suppressed[address]))
                continue
            events.append(self._event(record, "processed"))
            bounce = self._bouncing.get(address)
            events.append(self._event(record, "bounce", bounce) if bounce
                          else self._event(record, "delivered"))
        await self._deliver_events(events)

    async def _deliver_events(self, events: list[dict[str, Any]]) -> int:
        targets = self._emu.webhooks
        if targets is None:
            return 0
        self._last_batch = events
        body = json.dumps(events, ensure_ascii=False) + "\r\n"  # as SendGrid sends it
        stamp = str(int(time.time()))
        signature = targets.sendgrid_key.sign((stamp + body).encode(), ec.ECDSA(hashes.SHA256()))
        status, _ = await self._emu.post_webhook(
            targets.url(SENDGRID_EVENTS_PATH), body.encode(),
            {"Content-Type": "application/json", SIGNATURE_HEADER:
             base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}, "events")
        return status

    async def _ctl_event(self, request: web.Request) -> web.Response:
        """{"email": ..., "event": "bounce" | "blocked" | "spamreport" | ..., "later": bool}:
        report it for the latest message now, or (`later`, bounces only) for the next ones."""
        try:
            spec = await request.json()
            address, event = str(spec["email"]), str(spec["event"])
            if spec.get("later"):
                self.bounce(address, event)
                return web.json_response({"status": None})
            status = await self.play(address, event)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc) if isinstance(exc, ValueError)
                                      else type(exc).__name__}, status=400)
        return web.json_response({"status": status})

    async def _ctl_redeliver(self, request: web.Request) -> web.Response:
        return web.json_response({"status": await self.redeliver()})

    async def _send(self, request: web.Request) -> web.StreamResponse:
        if (denied := _auth_error(request)) is not None:
            self._emu.count(EMAIL, "unauthorized")
            return denied
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        problem = _validate_mail(payload)
        if problem is not None:
            self._emu.count(EMAIL, "bad_request")
            return _error(400, *problem)
        recipients = [to["email"] for p in payload["personalizations"] for to in p["to"]]
        fault = self._emu.take_fault(EMAIL, recipients)
        if fault is not None and fault.kind != "slow":
            return self._fault(fault)
        message_id = secrets.token_urlsafe(16)
        records = self._store_mail(payload, message_id)
        self._emu.count(EMAIL, "slow" if fault else "accepted")
        if self._emu.webhooks is not None:
            self._emu.later(self._report(records))
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.Response(status=202, headers={"X-Message-Id": message_id})

    def _fault(self, fault: Fault) -> web.Response:
        self._emu.count(EMAIL, fault.kind)
        if fault.kind == "rate_limit":
            return _error(429, "too many requests", headers={"Retry-After": str(fault.retry_after)})
        if fault.kind in ("invalid_number", "rejected"):
            return _error(400, "Does not contain a valid address.", "personalizations.0.to.0.email")
        return _error(500, "internal server error")

    def _store_mail(self, payload: dict[str, Any], message_id: str) -> list[dict[str, Any]]:
        """One record per recipient, as SendGrid's activity feed reports them."""
        content = {c.get("type"): c.get("value") for c in payload.get("content", [])}
        n = 0
        records = []
        for p in payload["personalizations"]:
            args = {**payload.get("custom_args", {}), **p.get("custom_args", {})}
            for to in p["to"]:
                records.append(self._emu.store(
                    EMAIL, f"{message_id}.filterdrecv-emulator-{n}.0", to["email"],
                    payload["from"]["email"], subject=p.get("subject", payload.get("subject")),
                    body=content.get("text/plain"), html=content.get("text/html"),
                    custom_args={k: str(v) for k, v in args.items()},
                    categories=list(payload.get("categories", []))))
                n += 1
        return records

    async def _activity(self, request: web.Request) -> web.Response:
        """Email Activity API subset: ``unique_args['k']="v"`` / ``to_email="x"`` joined by AND."""
        if (denied := _auth_error(request)) is not None:
            return denied
        self._emu.count(EMAIL, "lookup")
        try:
            clauses = _parse_activity_query(request.query.get("query", ""))
            limit = min(int(request.query.get("limit", 10)), 1000)
        except ValueError:
            return _error(400, "invalid query", "query")
        found = [m for m in reversed(self._emu.stored(EMAIL))
                 if all(_activity_value(m, key) == value for key, value in clauses)]
        return web.json_response({"messages": [_activity_row(m) for m in found[:limit]]})


def _auth_error(request: web.Request) -> web.Response | None:
    """Any key will do, but the SDK sends ``Bearer None`` when no key is configured."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Bearer" and token.strip() not in ("", "None"):
        return None
    return _error(401, "The provided authorization grant is invalid, expired, or revoked")


def _error(status: int, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return web.json_response(body, status=status, headers=headers)


def _validate_mail(payload: Any) -> tuple[str, str | None] | None:
    """Return (message, field) for the first problem SendGrid would reject, else None."""
    if not isinstance(payload, dict):
        return "Bad Request", None
    people = payload.get("personalizations")
    if not isinstance(people, list) or not people:
        return "The personalizations field is required.", "personalizations"
    for i, p in enumerate(people):
        tos = p.get("to") if isinstance(p, dict) else None
        if not isinstance(tos, list) or not tos:
            return "The to array is required.", f"personalizations.{i}.to"
        for j, to in enumerate(tos):
            if not isinstance(to, dict) or "@" not in str(to.get("email", "")):
                return "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"
    if "@" not in str((payload.get("from") or {}).get("email", "")):
        return "The from email does not contain a valid address.", "from.email"
    templated = bool(payload.get("template_id"))
    if not templated and not payload.get("subject") and not all(p.get("subject") for p in people):
        return "The subject is required.", "subject"
    content = payload.get("content")
    if not templated and (not isinstance(content, list) or not content
                          or not all(isinstance(c, dict) and c.get("type") and c.get("value")
                                     for c in content)):
        return "The content parameter is required unless a template_id is given.", "content"
    return None


_CLAUSE = re.compile(r"""^\s*(?:unique_args\[['"]([^'"]+)['"]\]"""
                     r'|(to_email|from_email|subject|msg_id))\s*=\s*"([^"]*)"\s*$')


def _parse_activity_query(query: str) -> list[tuple[str, str]]:
    """Turn the query into (key, value) pairs; custom arg keys are prefixed ``unique_args.``."""
    clauses = []
    for part in filter(str.strip, re.split(r"\s+AND\s+", query, flags=re.IGNORECASE)):
        match = _CLAUSE.match(part)
        if match is None:
            raise ValueError(part)
        arg, field, value = match.groups()
        clauses.append((f"unique_args.{arg}" if arg else field, value))
    return clauses


def _activity_value(message: dict[str, Any], key: str) -> str | None:
    if key.startswith("unique_args."):
        value: str | None = message["custom_args"].get(key.removeprefix("unique_args."))
        return value
    fields = {"to_email": message["to"], "from_email": message["from"],
              "subject": message["subject"], "msg_id": message["id"]}
    return fields[key]


def _activity_row(message: dict[str, Any]) -> dict[str, Any]:
    stamp = datetime.fromisoformat(message["received_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"msg_id": message["id"], "from_email": message["from"], "subject": message["subject"],
            "to_email": message["to"], "status": "delivered", "opens_count": 0, "clicks_count": 0,
            "last_event_time": stamp, "unique_args": dict(message["custom_args"])}
