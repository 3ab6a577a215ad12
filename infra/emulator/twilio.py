"""Twilio's Messages API (create, list with filters and pages, fetch), as the `twilio` SDK uses it.

Basic auth whose user is the URL's AccountSid; every message is stored and later read back as
delivered, so a worker reconciling after a crash finds what it sent.

With webhooks configured (`ProviderEmulator.configure_webhooks`), it calls back as Twilio does,
signed with the auth token (X-Twilio-Signature): a status callback for every message ("sent",
then "delivered", or "undelivered" with the ErrorCode a number was told to fail with), to the
message's StatusCallback or else the configured one; and a borrower's reply played through the
control API to the inbound webhook, with Twilio's own opt-out handling (a number that sent STOP
is refused with 21610 until it sends START) and the TwiML answer sent back as a message.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from xml.etree import ElementTree

from aiohttp import web
from twilio.request_validator import RequestValidator

from infra.emulator.faults import SMS, Fault, norm

if TYPE_CHECKING:
    from infra.emulator.server import ProviderEmulator

# Where our webhooks live under the configured base URL (api/routes/webhooks.py).
TWILIO_INBOUND_PATH = "/webhooks/twilio/inbound"
TWILIO_STATUS_PATH = "/webhooks/twilio/status"

# The local stack's account: the emulator takes any SID, this is the one everything local uses.
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "emulator-token"
MESSAGES = "/2010-04-01/Accounts/{account_sid}/Messages"
# The keywords Twilio itself acts on for a long code (single word, any case).
OPT_OUT_KEYWORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_KEYWORDS = {"START", "UNSTOP", "YES"}
# Error codes a number may be told to fail delivery with.
UNDELIVERED_CODES = {30003, 30005, 30006, 30007}


class TwilioApi:
    def __init__(self, emulator: ProviderEmulator) -> None:
        self._emu = emulator
        self._resources: dict[str, dict[str, Any]] = {}  # sid -> Twilio Message resource
        self._undeliverable: dict[str, int] = {}  # number -> ErrorCode its messages fail with
        self._opted_out: set[str] = set()  # numbers that sent STOP (Twilio blocks them)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(MESSAGES + ".json", self._create),
            web.get(MESSAGES + ".json", self._list),
            web.get(MESSAGES + "/{sid}.json", self._fetch),
            web.post("/_emulator/twilio/inbound", self._ctl_inbound),
            web.post("/_emulator/twilio/undeliverable", self._ctl_undeliverable),
        ]

    def reset(self) -> None:
        self._resources.clear()
        self._undeliverable.clear()
        self._opted_out.clear()

    # ----- what a test or the demo plays -----------------------------------------------------
    def undeliverable(self, number: str, error_code: int = 30006) -> None:
        """Messages to `number` are accepted, then reported undelivered with `error_code`."""
        if error_code not in UNDELIVERED_CODES:
            raise ValueError(f"error code must be one of {sorted(UNDELIVERED_CODES)}")
        self._undeliverable[norm(number)] = error_code

    def opted_out(self, number: str) -> bool:
        return norm(number) in self._opted_out

    async def inbound(self, sender: str, body: str) -> dict[str, Any]:
        """The borrower at `sender` texts `body` to our number: Twilio's keyword handling, then
        the signed call to the inbound webhook; its TwiML answer goes back as messages."""
        word = body.strip().upper()
        if word in OPT_OUT_KEYWORDS:
            self._opted_out.add(norm(sender))
        elif word in OPT_IN_KEYWORDS:
            self._opted_out.discard(norm(sender))
        targets = self._emu.webhooks
        if targets is None:
            return {"status": None, "replies": []}
        sid = "SM" + secrets.token_hex(16)
        ours = self._our_number()
        params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "Body": body,
                  "From": sender, "To": ours, "MessageSid": sid, "SmsSid": sid,
                  "SmsMessageSid": sid, "NumMedia": "0", "NumSegments": "1"}
        status, text = await self._post(targets.url(TWILIO_INBOUND_PATH), params, "inbound")
        replies = _twiml_messages(text) if status == 200 else []
        for reply in replies:  # Twilio sends the TwiML <Message>s to the sender
            resource = self._resource(ACCOUNT_SID, sender, ours, reply, None)
            self._emu.store(SMS, resource["sid"], sender, ours, body=reply, reply_to=sid)
            self._emu.count(SMS, "twiml_reply")
        return {"status": status, "message_sid": sid, "replies": replies}

    def _our_number(self) -> str:
        sent = [r["from"] for r in self._resources.values() if r.get("from")]
        return sent[-1] if sent else "+15005550006"

    async def _post(self, url: str, params: dict[str, str], kind: str) -> tuple[int, str]:
        targets = self._emu.webhooks
        assert targets is not None
        signature = RequestValidator(targets.twilio_auth_token).compute_signature(url, params)
        return await self._emu.post_webhook(
            url, urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded",
             "X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}, kind)

    async def _report(self, sid: str, callback: str | None) -> None:
        """Status callbacks for one message, as Twilio sends them: sent, then the outcome."""
        targets = self._emu.webhooks
        resource = self._resources.get(sid)
        if targets is None or resource is None:
            return
        await asyncio.sleep(targets.delay_seconds)
        code = self._undeliverable.get(norm(resource["to"]))
        outcome = "undelivered" if code else "delivered"
        resource["status"] = outcome
        resource["error_code"] = code
        for status in ("sent", outcome):
            params = {"AccountSid": resource["account_sid"], "ApiVersion": "2010-04-01",
                      "From": resource["from"] or "", "To": resource["to"], "MessageSid": sid,
                      "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}
            if status == "undelivered":
                params["ErrorCode"] = str(code)
            await self._post(callback or targets.url(TWILIO_STATUS_PATH), params, "status")

    async def _ctl_inbound(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            sender, body = str(spec["from"]), str(spec["body"])
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": type(exc).__name__}, status=400)
        return web.json_response(await self.inbound(sender, body))

    async def _ctl_undeliverable(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            self.undeliverable(str(spec["to"]), int(spec.get("error_code", 30006)))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": type(exc).__name__}, status=400)
        return web.Response(status=204)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if (denied := _auth_error(request)) is not None:
            self._emu.count(SMS, "unauthorized")
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
            self._emu.count(SMS, "bad_request")
            return _error(400, *invalid)
        if norm(to) in self._opted_out:
            self._emu.count(SMS, "unsubscribed")
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        fault = self._emu.take_fault(SMS, [to])
        if fault is not None and fault.kind != "slow":
            return self._fault(fault)
        account_sid = request.match_info["account_sid"]
        resource = self._resource(account_sid, to, sender, body, service)
        callback = str(form.get("StatusCallback", "")) or None
        self._emu.store(SMS, resource["sid"], to, sender, body=body, status_callback=callback)
        self._emu.count(SMS, "slow" if fault else "accepted")
        if self._emu.webhooks is not None:
            self._emu.later(self._report(resource["sid"], callback))
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.json_response({**resource, "status": "queued"}, status=201)

    def _fault(self, fault: Fault) -> web.Response:
        return _fault_response(self._emu, SMS, fault, 21211,
                               "The 'To' number is not a valid phone number.")

    def _resource(self, account_sid: str, to: str, sender: str, body: str,
                  service: str | None) -> dict[str, Any]:
        """Build the Message resource; later reads report it as delivered."""
        sid, now = "SM" + secrets.token_hex(16), datetime.now(UTC)
        stamp = format_datetime(now, usegmt=True)
        uri = MESSAGES.format(account_sid=account_sid) + f"/{sid}"
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
        self._resources[sid] = resource
        return _public(resource)

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := _auth_error(request)) is not None:
            return denied
        self._emu.count(SMS, "lookup")
        query, account_sid = request.query, request.match_info["account_sid"]
        try:
            bounds = {op: _parse_date_filter(query[key])
                      for op, key in (("ge", "DateSent>"), ("le", "DateSent<"), ("eq", "DateSent"))
                      if query.get(key)}
            page = max(int(query.get("Page", 0)), 0)
            size = min(max(int(query.get("PageSize", 50)), 1), 1000)
        except ValueError:
            return _error(400, 20001, "Invalid query parameter")
        found = [r for r in reversed(self._resources.values())  # Twilio lists newest first
                 if r["account_sid"] == account_sid and _matches(r, query, bounds)]
        chunk = found[page * size:(page + 1) * size]
        base = MESSAGES.format(account_sid=account_sid) + ".json"
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

    async def _fetch(self, request: web.Request) -> web.Response:
        return _fetch_response(request, self._emu, SMS, self._resources)


def _twiml_messages(text: str) -> list[str]:
    """The <Message> texts of a TwiML answer (our own API's: no external entities to fear)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return []
    return [m.text or "" for m in root.iter("Message")]


def _auth_error(request: web.Request) -> web.Response | None:
    """Twilio requires basic auth whose username is the AccountSid of the URL."""
    header = request.headers.get("Authorization", "")
    try:
        scheme, _, encoded = header.partition(" ")
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # covers binascii.Error and UnicodeDecodeError
        user, password, scheme = "", "", ""
    if scheme.lower() == "basic" and user == request.match_info["account_sid"] and password:
        return None
    return _error(401, 20003, "Authenticate",
                  headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})


def _fault_response(emu: ProviderEmulator, channel: str, fault: Fault, invalid_code: int,
                    invalid_message: str) -> web.Response:
    """Twilio's answer to a create that meets `fault` (not "slow"), counted under `channel`."""
    emu.count(channel, fault.kind)
    if fault.kind == "rate_limit":
        return _error(429, 20429, "Too Many Requests",
                      headers={"Retry-After": str(fault.retry_after)})
    if fault.kind in ("invalid_number", "rejected"):
        return _error(400, invalid_code, invalid_message)
    return _error(500, 20500, "An internal server error has occurred")


def _fetch_response(request: web.Request, emu: ProviderEmulator, channel: str,
                    resources: dict[str, dict[str, Any]]) -> web.Response:
    """Twilio's answer to fetching one resource (a message or a call) by its sid."""
    if (denied := _auth_error(request)) is not None:
        return denied
    emu.count(channel, "lookup")
    resource = resources.get(request.match_info["sid"])
    if resource is None or resource["account_sid"] != request.match_info["account_sid"]:
        return _error(404, 20404, f"The requested resource {request.path} was not found")
    return web.json_response(_public(resource))


def _error(status: int, code: int, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
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
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date_cmp_key(sent: datetime, bound: date | datetime) -> tuple[Any, Any]:
    """Compare at the precision of the filter; resources only expose whole seconds."""
    if isinstance(bound, datetime):
        return sent.replace(microsecond=0), bound
    return sent.date(), bound


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if not k.startswith("_")}


def _matches(resource: dict[str, Any], query: Any, bounds: dict[str, date | datetime]) -> bool:
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
