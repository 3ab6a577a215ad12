"""SendGrid's v3 mail send and the Email Activity feed subset the outbox reconciles against.

Any bearer key is accepted; each recipient becomes one record, as the activity feed reports them.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from infra.emulator.faults import EMAIL, Fault

if TYPE_CHECKING:
    from infra.emulator.server import ProviderEmulator

API_KEY = "SG.emulator"  # the local stack's key: any non-empty key will do


class SendGridApi:
    def __init__(self, emulator: ProviderEmulator) -> None:
        self._emu = emulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/mail/send", self._send),
            web.get("/v3/messages", self._activity),
        ]

    def reset(self) -> None:
        return None  # every record lives in the emulator's shared log

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
        self._store_mail(payload, message_id)
        self._emu.count(EMAIL, "slow" if fault else "accepted")
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

    def _store_mail(self, payload: dict[str, Any], message_id: str) -> None:
        """One record per recipient, as SendGrid's activity feed reports them."""
        content = {c.get("type"): c.get("value") for c in payload.get("content", [])}
        n = 0
        for p in payload["personalizations"]:
            args = {**payload.get("custom_args", {}), **p.get("custom_args", {})}
            for to in p["to"]:
                self._emu.store(EMAIL, f"{message_id}.filterdrecv-emulator-{n}.0", to["email"],
                                payload["from"]["email"],
                                subject=p.get("subject", payload.get("subject")),
                                body=content.get("text/plain"), html=content.get("text/html"),
                                custom_args={k: str(v) for k, v in args.items()},
                                categories=list(payload.get("categories", [])))
                n += 1

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
