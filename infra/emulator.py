"""Local stand-in for the Twilio Messages API and the SendGrid v3 API.

Activities talk to it through the real ``twilio`` and ``sendgrid`` SDKs (only the base URL
changes), so tests and the demo exercise the same serialisation, auth and error paths as
production, while faults (429, 500, bad recipient, late answers) can be injected per recipient.

Run standalone with ``python -m infra.emulator --host 127.0.0.1 --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import re
import secrets
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.utils import format_datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import ClientSession, web

log = logging.getLogger("infra.emulator")  # same name when run with -m

SMS, EMAIL, ANY = "sms", "email", "*"
CHANNELS = {SMS, EMAIL, ANY}
FAULT_KINDS = {"rate_limit", "server_error", "invalid_number", "rejected", "slow"}
TWILIO_MSGS = "/2010-04-01/Accounts/{account_sid}/Messages"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One injected failure; ``times`` counts down so tests can model transient errors."""

    id: str
    recipient: str
    channel: str
    kind: str
    times: int | None = None
    retry_after: int = 1
    delay: float = 0.0

    def matches(self, channel: str, recipient: str) -> bool:
        return self.channel in (ANY, channel) and self.recipient in (ANY, _norm(recipient))


def _norm(address: str) -> str:
    """Email addresses are case-insensitive; comparing folded forms avoids surprising misses."""
    return address.strip().casefold()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _twilio_error(status: int, code: int, message: str,
                  headers: dict | None = None) -> web.Response:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return web.json_response(body, status=status, headers=headers)


def _sendgrid_error(status: int, message: str, field: str | None = None,
                    headers: dict | None = None) -> web.Response:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return web.json_response(body, status=status, headers=headers)


def _num_segments(body: str) -> int:
    """GSM-7 fits 160 chars (153 when concatenated); anything else is UCS-2 (70/67)."""
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def _parse_date_filter(value: str) -> date | datetime:
    """The SDK sends ``YYYY-MM-DDTHH:MM:SSZ`` while the docs describe ``YYYY-MM-DD``; take both."""
    if len(value) == 10:
        return date.fromisoformat(value)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _date_cmp_key(sent: datetime, bound: date | datetime) -> tuple[Any, Any]:
    """Compare at the precision of the filter; resources only expose whole seconds."""
    if isinstance(bound, datetime):
        return sent.replace(microsecond=0), bound
    return sent.date(), bound


class ProviderEmulator:
    """In-memory Twilio + SendGrid server with fault injection and a JSON control API."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []
        self._twilio: dict[str, dict[str, Any]] = {}  # sid -> Twilio Message resource
        self._faults: list[Fault] = []
        self._stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind (port 0 picks a free port) and return the base URL to give the SDKs."""
        # access_log=None: the default access log prints query strings, i.e. phone numbers.
        self._runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self._url = f"http://{host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._url = None, None

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[_log_middleware])
        app.add_routes([
            web.post(TWILIO_MSGS + ".json", self._twilio_create),
            web.get(TWILIO_MSGS + ".json", self._twilio_list),
            web.get(TWILIO_MSGS + "/{sid}.json", self._twilio_fetch),
            web.post("/v3/mail/send", self._sendgrid_send),
            web.get("/v3/messages", self._sendgrid_activity),
            web.post("/_emulator/faults", self._ctl_add_fault),
            web.delete("/_emulator/faults", self._ctl_clear_faults),
            web.get("/_emulator/messages", self._ctl_messages),
            web.delete("/_emulator/messages", self._ctl_reset),
            web.get("/_emulator/stats", self._ctl_stats),
            web.get("/_emulator/health", self._ctl_health),
        ])
        return app

    # ----- in-process control ----------------------------------------------------------------
    def add_fault(self, recipient: str, kind: str, channel: str = ANY, times: int | None = None,
                  retry_after: int = 1, delay: float = 0) -> str:
        """Register a fault; the first matching active fault wins, in registration order."""
        if kind not in FAULT_KINDS or channel not in CHANNELS:
            raise ValueError(f"unknown fault kind {kind!r} or channel {channel!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        fault = Fault("FT" + secrets.token_hex(8), _norm(recipient), channel, kind, times,
                      int(retry_after), float(delay))
        self._faults.append(fault)
        return fault.id

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset(self) -> None:
        """Forget messages, faults and stats, so one emulator can serve many tests."""
        self._messages.clear()
        self._twilio.clear()
        self._faults.clear()
        self._stats.clear()

    def messages(self, channel: str | None = None, to: str | None = None) -> list[dict]:
        return [dict(m) for m in self._messages if channel in (None, m["channel"])
                and (to is None or _norm(to) == _norm(m["to"]))]

    def stats(self) -> dict[str, dict[str, int]]:
        return {channel: dict(counts) for channel, counts in self._stats.items()}

    def _take_fault(self, channel: str, recipients: list[str]) -> Fault | None:
        """Consume one use of the first fault matching any recipient of this request."""
        for fault in self._faults:
            if any(fault.matches(channel, r) for r in recipients):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _store(self, channel: str, ident: str, to: str, sender: str, **extra: Any) -> dict:
        record = {"id": ident, "channel": channel, "to": to, "from": sender, "subject": None,
                  "body": None, "html": None, "custom_args": {}, "status_callback": None,
                  "received_at": _now().isoformat()}
        record.update(extra)
        self._messages.append(record)
        return record

    # ----- Twilio ----------------------------------------------------------------------------
    @staticmethod
    def _twilio_auth_error(request: web.Request) -> web.Response | None:
        """Twilio requires basic auth whose username is the AccountSid of the URL."""
        header = request.headers.get("Authorization", "")
        try:
            scheme, _, encoded = header.partition(" ")
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:  # covers binascii.Error and UnicodeDecodeError
            user, password, scheme = "", "", ""
        if scheme.lower() == "basic" and user == request.match_info["account_sid"] and password:
            return None
        return _twilio_error(401, 20003, "Authenticate",
                             headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})

    async def _twilio_create(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._twilio_auth_error(request)) is not None:
            self._stats[SMS]["unauthorized"] += 1
            return denied
        form = await request.post()
        to, sender, body = (str(form.get(k, "")) for k in ("To", "From", "Body"))
        service = str(form.get("MessagingServiceSid", "")) or None
        invalid = (
            (not to and (21604, "A 'To' phone number is required."))
            or (not (sender or service) and (21603, "A 'From' phone number is required."))
            or (not (body or form.get("ContentSid") or form.get("MediaUrl"))
                and (21602, "Message body is required."))
        )
        if invalid:
            self._stats[SMS]["bad_request"] += 1
            return _twilio_error(400, *invalid)
        fault = self._take_fault(SMS, [to])
        if fault is not None and fault.kind != "slow":
            return self._twilio_fault(fault)
        account_sid = request.match_info["account_sid"]
        resource = self._twilio_resource(account_sid, to, sender, body, service)
        self._store(SMS, resource["sid"], to, sender, body=body,
                    status_callback=str(form.get("StatusCallback", "")) or None)
        self._stats[SMS]["slow" if fault else "accepted"] += 1
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.json_response({**resource, "status": "queued"}, status=201)

    def _twilio_fault(self, fault: Fault) -> web.Response:
        self._stats[SMS][fault.kind] += 1
        if fault.kind == "rate_limit":
            return _twilio_error(429, 20429, "Too Many Requests",
                                 headers={"Retry-After": str(fault.retry_after)})
        if fault.kind in ("invalid_number", "rejected"):
            return _twilio_error(400, 21211, "The 'To' number is not a valid phone number.")
        return _twilio_error(500, 20500, "An internal server error has occurred")

    def _twilio_resource(self, account_sid: str, to: str, sender: str, body: str,
                         service: str | None) -> dict[str, Any]:
        """Build the Message resource; later reads report it as delivered."""
        sid, now = "SM" + secrets.token_hex(16), _now()
        stamp = format_datetime(now, usegmt=True)
        uri = TWILIO_MSGS.format(account_sid=account_sid) + f"/{sid}"
        resource = {
            "account_sid": account_sid, "api_version": "2010-04-01", "body": body,
            "date_created": stamp, "date_sent": stamp, "date_updated": stamp,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": sender or None, "messaging_service_sid": service, "num_media": "0",
            "num_segments": str(_num_segments(body)), "price": None, "price_unit": "USD",
            "sid": sid, "status": "delivered", "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
            "to": to, "_sent_at": now,
        }
        self._twilio[sid] = resource
        return _public(resource)

    async def _twilio_list(self, request: web.Request) -> web.Response:
        if (denied := self._twilio_auth_error(request)) is not None:
            return denied
        self._stats[SMS]["lookup"] += 1
        query, account_sid = request.query, request.match_info["account_sid"]
        try:
            bounds = {op: _parse_date_filter(query[key])
                      for op, key in (("ge", "DateSent>"), ("le", "DateSent<"), ("eq", "DateSent"))
                      if query.get(key)}
            page = max(int(query.get("Page", 0)), 0)
            size = min(max(int(query.get("PageSize", 50)), 1), 1000)
        except ValueError:
            return _twilio_error(400, 20001, "Invalid query parameter")
        found = [r for r in reversed(self._twilio.values())  # Twilio lists newest first
                 if r["account_sid"] == account_sid and _twilio_match(r, query, bounds)]
        chunk = found[page * size:(page + 1) * size]
        base = TWILIO_MSGS.format(account_sid=account_sid) + ".json"
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(n: int) -> str:
            return base + "?" + urlencode({**filters, "PageSize": size, "Page": n})

        return web.json_response({
            "messages": [_public(r) for r in chunk], "page": page, "page_size": size,
            "first_page_uri": page_uri(0), "uri": page_uri(page),
            "next_page_uri": page_uri(page + 1) if len(found) > (page + 1) * size else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
        })

    async def _twilio_fetch(self, request: web.Request) -> web.Response:
        if (denied := self._twilio_auth_error(request)) is not None:
            return denied
        self._stats[SMS]["lookup"] += 1
        resource = self._twilio.get(request.match_info["sid"])
        if resource is None or resource["account_sid"] != request.match_info["account_sid"]:
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(_public(resource))

    # ----- SendGrid --------------------------------------------------------------------------
    @staticmethod
    def _sendgrid_auth_error(request: web.Request) -> web.Response | None:
        """Any key will do, but the SDK sends ``Bearer None`` when no key is configured."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and token.strip() not in ("", "None"):
            return None
        return _sendgrid_error(401, "The provided authorization grant is invalid, "
                                    "expired, or revoked")

    async def _sendgrid_send(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._sendgrid_auth_error(request)) is not None:
            self._stats[EMAIL]["unauthorized"] += 1
            return denied
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        problem = _validate_mail(payload)
        if problem is not None:
            self._stats[EMAIL]["bad_request"] += 1
            return _sendgrid_error(400, *problem)
        recipients = [to["email"] for p in payload["personalizations"] for to in p["to"]]
        fault = self._take_fault(EMAIL, recipients)
        if fault is not None and fault.kind != "slow":
            return self._sendgrid_fault(fault)
        message_id = secrets.token_urlsafe(16)
        self._store_mail(payload, message_id)
        self._stats[EMAIL]["slow" if fault else "accepted"] += 1
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.Response(status=202, headers={"X-Message-Id": message_id})

    def _sendgrid_fault(self, fault: Fault) -> web.Response:
        self._stats[EMAIL][fault.kind] += 1
        if fault.kind == "rate_limit":
            return _sendgrid_error(429, "too many requests",
                                   headers={"Retry-After": str(fault.retry_after)})
        if fault.kind in ("invalid_number", "rejected"):
            return _sendgrid_error(400, "Does not contain a valid address.",
                                   "personalizations.0.to.0.email")
        return _sendgrid_error(500, "internal server error")

    def _store_mail(self, payload: dict[str, Any], message_id: str) -> None:
        """One record per recipient, as SendGrid's activity feed reports them."""
        content = {c.get("type"): c.get("value") for c in payload.get("content", [])}
        n = 0
        for p in payload["personalizations"]:
            args = {**payload.get("custom_args", {}), **p.get("custom_args", {})}
            for to in p["to"]:
                self._store(EMAIL, f"{message_id}.filterdrecv-emulator-{n}.0", to["email"],
                            payload["from"]["email"],
                            subject=p.get("subject", payload.get("subject")),
                            body=content.get("text/plain"), html=content.get("text/html"),
                            custom_args={k: str(v) for k, v in args.items()},
                            categories=list(payload.get("categories", [])))
                n += 1

    async def _sendgrid_activity(self, request: web.Request) -> web.Response:
        """Email Activity API subset: ``unique_args['k']="v"`` / ``to_email="x"`` joined by AND."""
        if (denied := self._sendgrid_auth_error(request)) is not None:
            return denied
        self._stats[EMAIL]["lookup"] += 1
        try:
            clauses = _parse_activity_query(request.query.get("query", ""))
            limit = min(int(request.query.get("limit", 10)), 1000)
        except ValueError:
            return _sendgrid_error(400, "invalid query", "query")
        found = [m for m in reversed(self._messages) if m["channel"] == EMAIL
                 and all(_activity_value(m, key) == value for key, value in clauses)]
        return web.json_response({"messages": [_activity_row(m) for m in found[:limit]]})

    # ----- control API -----------------------------------------------------------------------
    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            fault_id = self.add_fault(
                spec["recipient"], spec["kind"], spec.get("channel", ANY), spec.get("times"),
                spec.get("retry_after") or 1, spec.get("delay") or 0)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"id": fault_id}, status=201)

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.Response(status=204)

    async def _ctl_messages(self, request: web.Request) -> web.Response:
        found = self.messages(request.query.get("channel"), request.query.get("to"))
        return web.json_response({"messages": found})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


@web.middleware
async def _log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log the route template, never the concrete path or query: they carry borrower data."""
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "<unmatched>"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        log.info("%s %s -> %s", request.method, template, exc.status)
        raise
    log.info("%s %s -> %s", request.method, template, response.status)
    return response


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if not k.startswith("_")}


def _twilio_match(resource: dict[str, Any], query: Any, bounds: dict[str, date | datetime]) -> bool:
    if query.get("To") and resource["to"] != query["To"]:
        return False
    if query.get("From") and resource["from"] != query["From"]:
        return False
    for op, bound in bounds.items():
        sent, limit = _date_cmp_key(resource["_sent_at"], bound)
        if (op == "ge" and sent < limit) or (op == "le" and sent > limit) or (
                op == "eq" and sent != limit):
            return False
    return True


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
        return message["custom_args"].get(key.removeprefix("unique_args."))
    fields = {"to_email": message["to"], "from_email": message["from"],
              "subject": message["subject"], "msg_id": message["id"]}
    return fields[key]


def _activity_row(message: dict[str, Any]) -> dict[str, Any]:
    stamp = datetime.fromisoformat(message["received_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"msg_id": message["id"], "from_email": message["from"], "subject": message["subject"],
            "to_email": message["to"], "status": "delivered", "opens_count": 0, "clicks_count": 0,
            "last_event_time": stamp, "unique_args": dict(message["custom_args"])}


class EmulatorClient:
    """Control-API client for code that runs the emulator in another process (e.g. the demo)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._session: ClientSession | None = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = ClientSession()
        async with self._session.request(method, self._base + path, **kwargs) as resp:
            resp.raise_for_status()
            return await resp.json() if resp.status != 204 else None

    async def messages(self, channel: str | None = None, to: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("channel", channel), ("to", to)) if v is not None}
        return (await self._call("GET", "/_emulator/messages", params=params))["messages"]

    async def add_fault(self, recipient: str, kind: str, channel: str = ANY,
                        times: int | None = None, retry_after: int = 1, delay: float = 0) -> str:
        spec = {"recipient": recipient, "kind": kind, "channel": channel, "times": times,
                "retry_after": retry_after, "delay": delay}
        return (await self._call("POST", "/_emulator/faults", json=spec))["id"]

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_emulator/faults")

    async def reset(self) -> None:
        await self._call("DELETE", "/_emulator/messages")

    async def stats(self) -> dict[str, dict[str, int]]:
        return await self._call("GET", "/_emulator/stats")

    async def health(self) -> bool:
        return (await self._call("GET", "/_emulator/health"))["status"] == "ok"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _serve(host: str, port: int) -> None:
    emulator = ProviderEmulator()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    url = await emulator.start(host, port)
    print(f"provider emulator listening on {url}", flush=True)  # parents read the port from here
    try:
        await stopping.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
