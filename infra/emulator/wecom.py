"""WeCom's (企业微信) server API for external-contact messages, as `WeComClient` uses it.

`gettoken` issues tokens valid `expires_in` seconds; `externalcontact/get` knows every external
user id as a contact of staff member `STAFF_USERID` unless a test removed it;
`add_msg_template` creates a task that stays unsent until the staff member confirms it (the
control route `POST /_emulator/wecom/confirm`, or `auto_confirm`), as in the WeCom app.
Faults on channel "wecom", per external user id: `rate_limit` (45009), `invalid_number` and
`rejected` (the id in `fail_list`: not a contact), `server_error` (-1), `slow` (answers late,
after creating the task). `POST /_emulator/wecom/expire_tokens` expires every issued token (42001).

A contact deleting the lender (`POST /_emulator/wecom/delete_contact` with `external_userid` and
`by`: "customer", the contact deleted the staff member, or "staff", the member deleted the
contact; `repeat` to deliver it more than once, as WeCom retries) makes them no contact any more
and calls the lender's callback URL (the configured webhook base + `CALLBACK_PATH`) with the
`change_external_contact` event, signed and encrypted as WeCom does (infra/wecom_callback.py)
with the callback keys below, which the local stack's settings use (infra/settings.py).
`POST /_emulator/wecom/verify_url` makes the GET WeCom makes when the URL is saved.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from infra import wecom_callback
from infra.wecom_callback import CALLBACK_PATH, CallbackKeys

if TYPE_CHECKING:
    from infra.emulator.server import ProviderEmulator

WECOM = "wecom"
CORP_ID = "ww-emulator-corp"
CORP_SECRET = "emulator-wecom-secret"
STAFF_USERID = "staff-lee"
TOKEN_SECONDS = 7200
API = "/cgi-bin"
CONTROL = "/_emulator/wecom"
UNSENT, SENT, NOT_A_CONTACT, OVER_LIMIT = 0, 1, 2, 3
# The callback URL's keys (WECOM_CALLBACK_TOKEN, WECOM_CALLBACK_AES_KEY for a real corp).
CALLBACK_TOKEN = "emulator-wecom-callback-token"
CALLBACK_AES_KEY = "EmulatorWeComCallbackAesKey0123456789abcdef"
AGENT_ID = "1000002"
# Who deleted whom -> the ChangeType of WeCom's change_external_contact event.
CHANGE_TYPES = {"customer": "del_follow_user", "staff": "del_external_contact"}
log = logging.getLogger("infra.emulator")


def _err(code: int, message: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": message})


class WeComApi:
    def __init__(self, emulator: ProviderEmulator) -> None:
        self._emu = emulator
        self._tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._tasks: dict[str, dict[str, Any]] = {}  # msgid -> task
        self._removed: set[str] = set()
        self.auto_confirm = False
        self.token_requests = 0
        self.callbacks: list[dict[str, Any]] = []  # the events called back, and the answers

    def routes(self) -> list[web.RouteDef]:
        ext = API + "/externalcontact"
        return [
            web.get(API + "/gettoken", self._gettoken),
            web.get(ext + "/get", self._contact),
            web.post(ext + "/add_msg_template", self._add_msg_template),
            web.post(ext + "/get_groupmsg_task", self._task),
            web.post(ext + "/get_groupmsg_send_result", self._send_result),
            web.post(ext + "/remind_groupmsg_send", self._remind),
            web.post(ext + "/cancel_groupmsg_send", self._cancel),
            web.post(ext + "/get_groupmsg_list_v2", self._list),
            web.post(CONTROL + "/confirm", self._ctl_confirm),
            web.post(CONTROL + "/expire_tokens", self._ctl_expire),
            web.post(CONTROL + "/remove_contact", self._ctl_remove),
            web.post(CONTROL + "/auto_confirm", self._ctl_auto_confirm),
            web.get(CONTROL + "/tasks", self._ctl_tasks),
            web.post(CONTROL + "/delete_contact", self._ctl_delete_contact),
            web.post(CONTROL + "/verify_url", self._ctl_verify_url),
        ]

    def reset(self) -> None:
        self._tokens.clear()
        self._tasks.clear()
        self._removed.clear()
        self.auto_confirm = False
        self.token_requests = 0
        self.callbacks.clear()

    # ----- in-process control (the routes below call these) --------------------------------
    def expire_tokens(self) -> None:
        for token in self._tokens:
            self._tokens[token] = 0.0

    def remove_contact(self, external_userid: str) -> None:
        self._removed.add(external_userid)

    def delete_contact(self, external_userid: str, by: str = "customer", repeat: int = 1) -> None:
        """The contact and the staff member are no longer contacts; WeCom tells the lender's
        callback (in the background, `repeat` times, as after a lost answer)."""
        change_type = CHANGE_TYPES[by]
        self._removed.add(external_userid)
        event = _contact_event(change_type, STAFF_USERID, external_userid, int(time.time()))
        for _ in range(repeat):
            self._emu.later(self._call_back(event, change_type))

    def tasks(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self._tasks.values()]

    def confirm(self, *, msgid: str | None = None, external_userid: str | None = None) -> int:
        """The staff member confirms the matching unsent tasks; how many."""
        done = 0
        for task in self._tasks.values():
            if task["status"] != UNSENT or task["cancelled"]:
                continue
            if msgid not in (None, task["msgid"]) or external_userid not in (
                    None, task["external_userid"]):
                continue
            task["status"] = self._delivery_status(task["external_userid"])
            task["send_time"] = int(time.time())
            for m in self._emu.stored(WECOM):
                if m["id"] == task["msgid"]:
                    m["status"] = "sent" if task["status"] == SENT else "failed"
            done += 1
        return done

    def _delivery_status(self, external_userid: str) -> int:
        """WeCom's own per-customer allowance: as many a month as the month has days."""
        if external_userid in self._removed:
            return NOT_A_CONTACT
        now = time.gmtime()
        month = time.strftime("%Y-%m", now)
        sent = sum(1 for t in self._tasks.values() if t["external_userid"] == external_userid
                   and t["status"] == SENT
                   and time.strftime("%Y-%m", time.gmtime(t["send_time"])) == month)
        allowance = calendar.monthrange(now.tm_year, now.tm_mon)[1]
        return OVER_LIMIT if sent >= allowance else SENT

    # ----- the API --------------------------------------------------------------------------
    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token", "")
        expiry = self._tokens.get(token)
        if expiry is None:
            self._emu.count(WECOM, "invalid_token")
            return _err(40014, "invalid access_token")
        if time.time() >= expiry:
            self._emu.count(WECOM, "expired_token")
            return _err(42001, "access_token expired")
        return None

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self._emu.count(WECOM, "gettoken")
        if request.query.get("corpid") != CORP_ID or (
                request.query.get("corpsecret") != CORP_SECRET):
            return _err(40001, "invalid credential")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.time() + TOKEN_SECONDS
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token,
                                  "expires_in": TOKEN_SECONDS})

    async def _contact(self, request: web.Request) -> web.Response:
        if (denied := self._token_error(request)) is not None:
            return denied
        user = request.query.get("external_userid", "")
        if not user or user in self._removed:
            return _err(84061, "not external contact")
        return web.json_response({
            "errcode": 0, "errmsg": "ok",
            "external_contact": {"external_userid": user, "type": 1},
            "follow_user": [{"userid": STAFF_USERID, "createtime": 0}]})

    async def _add_msg_template(self, request: web.Request) -> web.Response:
        if (denied := self._token_error(request)) is not None:
            return denied
        body = await request.json()
        users = [str(u) for u in body.get("external_userid") or []]
        text = str((body.get("text") or {}).get("content", ""))
        if body.get("chat_type", "single") != "single" or not users or not text:
            return _err(40058, "invalid parameter")
        fault = self._emu.take_fault(WECOM, users)
        if fault is not None and fault.kind != "slow":
            self._emu.count(WECOM, fault.kind)
            if fault.kind == "rate_limit":
                return _err(45009, "api freq out of limit")
            if fault.kind in ("invalid_number", "rejected"):
                return web.json_response({"errcode": 0, "errmsg": "ok", "fail_list": users,
                                          "msgid": ""})
            return _err(-1, "system busy")
        sender = str(body.get("sender") or STAFF_USERID)
        msgid = "msg" + secrets.token_hex(12)
        for user in users:
            task = {"msgid": msgid, "external_userid": user, "sender": sender, "text": text,
                    "create_time": int(time.time()), "status": UNSENT, "send_time": 0,
                    "reminders": 0, "cancelled": False}
            self._tasks[msgid] = task
            self._emu.store(WECOM, msgid, user, sender, body=text, status="pending")
        self._emu.count(WECOM, "slow" if fault else "accepted")
        if self.auto_confirm:
            self.confirm(msgid=msgid)
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return web.json_response({"errcode": 0, "errmsg": "ok", "fail_list": [], "msgid": msgid})

    async def _task_of(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response]:
        if (denied := self._token_error(request)) is not None:
            return None, denied
        body = await request.json()
        task = self._tasks.get(str(body.get("msgid", "")))
        if task is None:
            return None, _err(41050, "invalid msgid")
        return task, web.Response()

    async def _task(self, request: web.Request) -> web.Response:
        task, denied = await self._task_of(request)
        if task is None:
            return denied
        status = 2 if task["status"] != UNSENT else 0
        return web.json_response({"errcode": 0, "errmsg": "ok", "next_cursor": "", "task_list": [
            {"userid": task["sender"], "status": status, "send_time": task["send_time"]}]})

    async def _send_result(self, request: web.Request) -> web.Response:
        task, denied = await self._task_of(request)
        if task is None:
            return denied
        self._emu.count(WECOM, "lookup")
        return web.json_response({"errcode": 0, "errmsg": "ok", "next_cursor": "", "send_list": [
            {"external_userid": task["external_userid"], "chat_id": "",
             "userid": task["sender"], "status": task["status"],
             "send_time": task["send_time"]}]})

    async def _remind(self, request: web.Request) -> web.Response:
        task, denied = await self._task_of(request)
        if task is None:
            return denied
        task["reminders"] += 1
        self._emu.count(WECOM, "reminded")
        return _err(0, "ok")

    async def _cancel(self, request: web.Request) -> web.Response:
        task, denied = await self._task_of(request)
        if task is None:
            return denied
        if task["status"] == UNSENT:
            task["cancelled"] = True
            for m in self._emu.stored(WECOM):
                if m["id"] == task["msgid"]:
                    m["status"] = "cancelled"
        self._emu.count(WECOM, "cancelled")
        return _err(0, "ok")

    async def _list(self, request: web.Request) -> web.Response:
        if (denied := self._token_error(request)) is not None:
            return denied
        body = await request.json()
        since, until = int(body.get("start_time", 0)), int(body.get("end_time", 2**31))
        self._emu.count(WECOM, "lookup")
        found = [{"msgid": t["msgid"], "creator": t["sender"], "create_type": 0,
                  "text": {"content": t["text"]}, "create_time": t["create_time"]}
                 for t in self._tasks.values() if since <= t["create_time"] <= until]
        return web.json_response({"errcode": 0, "errmsg": "ok", "next_cursor": "",
                                  "group_msg_list": found})

    # ----- the callbacks to the lender --------------------------------------------------------
    def _callback_url(self, query: dict[str, str]) -> str | None:
        targets = self._emu.webhooks
        if targets is None:
            return None
        return targets.url(CALLBACK_PATH) + "?" + urlencode(query)

    async def _call_back(self, event: bytes, change_type: str) -> None:
        keys = callback_keys()
        encrypted = wecom_callback.encrypt(keys, event)
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        url = self._callback_url({
            "msg_signature": wecom_callback.signature(keys.token, timestamp, nonce, encrypted),
            "timestamp": timestamp, "nonce": nonce})
        if url is None:
            self.callbacks.append({"change_type": change_type, "status": 0, "answer": ""})
            return
        body = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA["
                f"{encrypted}]]></Encrypt><AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>")
        status, answer = await self._emu.post_webhook(
            url, body.encode(), {"Content-Type": "text/xml"}, "wecom")
        self.callbacks.append({"change_type": change_type, "status": status, "answer": answer})

    async def verify_url(self) -> bool:
        """WeCom's GET when the callback URL is saved: True if it answered the echostr."""
        keys = callback_keys()
        echo = secrets.token_hex(8)
        encrypted = wecom_callback.encrypt(keys, echo.encode())
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        url = self._callback_url({
            "msg_signature": wecom_callback.signature(keys.token, timestamp, nonce, encrypted),
            "timestamp": timestamp, "nonce": nonce, "echostr": encrypted})
        if url is None:
            return False
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.get(url) as resp:
                return resp.status == 200 and await resp.text() == echo
        except (aiohttp.ClientError, TimeoutError) as err:
            log.info("wecom url verification failed: %s", type(err).__name__)
            return False

    # ----- control routes --------------------------------------------------------------------
    async def _ctl_confirm(self, request: web.Request) -> web.Response:
        spec = await request.json()
        done = self.confirm(msgid=spec.get("msgid"), external_userid=spec.get("external_userid"))
        return web.json_response({"confirmed": done})

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        self.expire_tokens()
        return web.Response(status=204)

    async def _ctl_remove(self, request: web.Request) -> web.Response:
        self.remove_contact(str((await request.json())["external_userid"]))
        return web.Response(status=204)

    async def _ctl_auto_confirm(self, request: web.Request) -> web.Response:
        self.auto_confirm = bool((await request.json()).get("on", True))
        return web.Response(status=204)

    async def _ctl_tasks(self, request: web.Request) -> web.Response:
        return web.json_response({"tasks": self.tasks()})

    async def _ctl_delete_contact(self, request: web.Request) -> web.Response:
        spec = await request.json()
        try:
            self.delete_contact(str(spec["external_userid"]), str(spec.get("by", "customer")),
                                int(spec.get("repeat", 1)))
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": type(exc).__name__}, status=400)
        return web.Response(status=204)

    async def _ctl_verify_url(self, request: web.Request) -> web.Response:
        return web.json_response({"verified": await self.verify_url()})


def callback_keys() -> CallbackKeys:
    return CallbackKeys(CALLBACK_TOKEN, CALLBACK_AES_KEY, CORP_ID)


def _contact_event(change_type: str, userid: str, external_userid: str, at: int) -> bytes:
    """WeCom's change_external_contact event, as its callback carries it (decrypted)."""
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            "<FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[change_external_contact]]></Event>"
            f"<ChangeType><![CDATA[{change_type}]]></ChangeType>"
            f"<UserID><![CDATA[{userid}]]></UserID>"
            f"<ExternalUserID><![CDATA[{external_userid}]]></ExternalUserID></xml>").encode()
