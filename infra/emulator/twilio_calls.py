"""Twilio's Calls API (create, list, fetch), as the `twilio` SDK uses it, and the calls it plays.

A created call is "queued"; moments later it ends as the number's behaviour says (default
completed, answered by a human; `POST /_emulator/calls/behaviour` with `to`, `status`
(completed, busy, no-answer, failed), `answered_by` (human, machine_start, ...) and `digits` (the
key the borrower presses)). With `MachineDetection` the resource and the callback carry
`AnsweredBy`. Callbacks are signed like Twilio's (`X-Twilio-Signature`, the local stack's auth
token): the `<Gather>` action first when a key was pressed, then the status callback. Faults on
channel "voice", per number: rate_limit (429), invalid_number and rejected (400, 21217),
server_error (500), slow (answers late, after placing the call).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from infra.emulator.faults import norm
from infra.emulator.twilio import (
    AUTH_TOKEN,
    _auth_error,
    _date_cmp_key,
    _error,
    _fault_response,
    _fetch_response,
    _parse_date_filter,
    _public,
)

if TYPE_CHECKING:
    from infra.emulator.server import ProviderEmulator

VOICE = "voice"
CALLS = "/2010-04-01/Accounts/{account_sid}/Calls"
CONTROL = "/_emulator/calls"
RING_SECONDS = 0.05
FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}
_GATHER_ACTION = re.compile(r'<Gather[^>]*\baction="([^"]+)"')
log = logging.getLogger("infra.emulator")


class TwilioCallsApi:
    def __init__(self, emulator: ProviderEmulator) -> None:
        self._emu = emulator
        self._calls: dict[str, dict[str, Any]] = {}  # sid -> Call resource (+ private keys)
        self._behaviour: dict[str, dict[str, str]] = {}  # number -> how its calls go
        self._tasks: set[asyncio.Task[None]] = set()
        self.callbacks: list[dict[str, str]] = []  # what was called back, and the answer

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(CALLS + ".json", self._create),
            web.get(CALLS + ".json", self._list),
            web.get(CALLS + "/{sid}.json", self._fetch),
            web.post(CONTROL + "/behaviour", self._ctl_behaviour),
            web.get(CONTROL, self._ctl_calls),
        ]

    def reset(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._calls.clear()
        self._behaviour.clear()
        self.callbacks.clear()

    def set_behaviour(self, to: str, status: str = "completed", answered_by: str = "human",
                      digits: str = "") -> None:
        if status not in FINAL:
            raise ValueError(f"unknown final call status {status!r}")
        self._behaviour[norm(to)] = {"status": status, "answered_by": answered_by,
                                     "digits": digits}

    def calls(self) -> list[dict[str, Any]]:
        return [{**_public(c), "twiml": c["_twiml"]} for c in self._calls.values()]

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if (denied := _auth_error(request)) is not None:
            self._emu.count(VOICE, "unauthorized")
            return denied
        form = await request.post()
        to, sender = str(form.get("To", "")), str(form.get("From", ""))
        twiml, url = str(form.get("Twiml", "")), str(form.get("Url", ""))
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not sender:
            return _error(400, 21213, "No 'From' number is specified")
        if not (twiml or url):
            return _error(400, 21205, "Url or Twiml is required")
        fault = self._emu.take_fault(VOICE, [to])
        if fault is not None and fault.kind != "slow":
            return _fault_response(self._emu, VOICE, fault, 21217,
                                   "Phone number does not appear to be valid")
        account_sid = request.match_info["account_sid"]
        sid, now = "CA" + secrets.token_hex(16), datetime.now(UTC)
        uri = CALLS.format(account_sid=account_sid) + f"/{sid}"
        call: dict[str, Any] = {
            "sid": sid, "account_sid": account_sid, "api_version": "2010-04-01",
            "to": to, "to_formatted": to, "from": sender, "from_formatted": sender,
            "status": "queued", "direction": "outbound-api", "answered_by": None,
            "duration": None, "start_time": None, "end_time": None, "price": None,
            "date_created": format_datetime(now, usegmt=True),
            "date_updated": format_datetime(now, usegmt=True), "uri": uri + ".json",
            "_sent_at": now, "_twiml": twiml,
            "_amd": bool(form.get("MachineDetection")),
            "_status_callback": str(form.get("StatusCallback", "")) or None,
        }
        self._calls[sid] = call
        self._emu.store(VOICE, sid, to, sender, body=twiml,
                        status_callback=call["_status_callback"])
        self._emu.count(VOICE, "slow" if fault else "accepted")
        task = asyncio.get_running_loop().create_task(self._play(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.json_response(_public(call), status=201)

    async def _play(self, call: dict[str, Any]) -> None:
        """Ring, end as the number's behaviour says, and call back (signed)."""
        how = self._behaviour.get(norm(call["to"]), {"status": "completed",
                                                      "answered_by": "human", "digits": ""})
        await asyncio.sleep(RING_SECONDS)
        now = datetime.now(UTC)
        call["start_time"] = format_datetime(now, usegmt=True)
        answered = how["status"] == "completed"
        if answered and call["_amd"]:
            call["answered_by"] = how["answered_by"]
        base = {"AccountSid": call["account_sid"], "CallSid": call["sid"], "From": call["from"],
                "To": call["to"], "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
        if call["answered_by"]:
            base["AnsweredBy"] = call["answered_by"]
        action = _GATHER_ACTION.search(call["_twiml"] or "")
        if answered and how["digits"] and action and call["answered_by"] in (None, "human"):
            await self._call_back(action.group(1).replace("&amp;", "&"),
                                  {**base, "CallStatus": "in-progress", "Digits": how["digits"]})
        call.update(status=how["status"], duration="12" if answered else "0",
                    end_time=format_datetime(datetime.now(UTC), usegmt=True))
        if call["_status_callback"]:
            await self._call_back(call["_status_callback"], {
                **base, "CallStatus": how["status"], "CallDuration": call["duration"]})

    async def _call_back(self, url: str, params: dict[str, str]) -> None:
        targets = self._emu.webhooks
        token = targets.twilio_auth_token if targets is not None else AUTH_TOKEN
        signature = RequestValidator(token).compute_signature(url, params)
        answer = ""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as resp:
                answer = f"{resp.status} {await resp.text()}"
        except (aiohttp.ClientError, TimeoutError) as err:
            log.info("voice callback failed: %s", type(err).__name__)
            answer = type(err).__name__
        self.callbacks.append({"url": url, "CallSid": params["CallSid"],
                               "CallStatus": params["CallStatus"],
                               "Digits": params.get("Digits", ""), "answer": answer})

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := _auth_error(request)) is not None:
            return denied
        self._emu.count(VOICE, "lookup")
        query, account_sid = request.query, request.match_info["account_sid"]
        try:
            bounds: dict[str, date | datetime] = {
                op: _parse_date_filter(query[key])
                for op, key in (("ge", "StartTime>"), ("le", "StartTime<"), ("eq", "StartTime"))
                if query.get(key)}
            size = min(max(int(query.get("PageSize", 50)), 1), 1000)
        except ValueError:
            return _error(400, 20001, "Invalid query parameter")
        found = []
        for call in reversed(self._calls.values()):  # newest first, as Twilio lists
            if call["account_sid"] != account_sid:
                continue
            if query.get("To") and call["to"] != query["To"]:
                continue
            if query.get("From") and call["from"] != query["From"]:
                continue
            sent = call["_sent_at"]
            if any((op == "ge" and _date_cmp_key(sent, b)[0] < _date_cmp_key(sent, b)[1])
                   or (op == "le" and _date_cmp_key(sent, b)[0] > _date_cmp_key(sent, b)[1])
                   for op, b in bounds.items()):
                continue
            found.append(_public(call))
        base = CALLS.format(account_sid=account_sid) + ".json"
        page_uri = base + "?" + urlencode({"PageSize": size, "Page": 0})
        return web.json_response({
            "calls": found[:size], "page": 0, "page_size": size, "first_page_uri": page_uri,
            "uri": page_uri, "next_page_uri": None, "previous_page_uri": None,
            "start": 0, "end": max(len(found[:size]) - 1, 0)})

    async def _fetch(self, request: web.Request) -> web.Response:
        return _fetch_response(request, self._emu, VOICE, self._calls)

    async def _ctl_behaviour(self, request: web.Request) -> web.Response:
        spec = await request.json()
        try:
            self.set_behaviour(spec["to"], spec.get("status", "completed"),
                               spec.get("answered_by", "human"), spec.get("digits", ""))
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.Response(status=204)

    async def _ctl_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls(), "callbacks": self.callbacks})
