"""A small typed client for the parts of WeCom's (企业微信) server API the WeCom channel uses.

WeCom answers HTTP 200 with `{"errcode": ..., "errmsg": ...}`; `errcode` 0 is success. The access
token comes from `gettoken` (corpid, corpsecret) and lasts `expires_in` seconds (7200): it is cached
until shortly before then, never fetched per message, and fetched again once when a call answers
40014 (invalid) or 42001 (expired). (wechatpy's last stable release is from 2021, so this is ours.)
Source: developer.work.weixin.qq.com/document/path/91039 (token), 92135 (external-contact messages).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
INVALID_TOKEN, EXPIRED_TOKEN = 40014, 42001
TOKEN_ERRORS = {INVALID_TOKEN, EXPIRED_TOKEN}
FREQUENCY_LIMIT = 45009
NOT_EXTERNAL_CONTACT = 84061
# Refresh this long before the token's own expiry (clock skew, a slow request).
TOKEN_MARGIN_SECONDS = 300


class WeComError(Exception):
    """WeCom answered with a non-zero errcode. The message carries the code only: WeCom's errmsg
    may quote the request (an external user id)."""

    def __init__(self, errcode: int) -> None:
        super().__init__(f"wecom errcode {errcode}")
        self.errcode = errcode


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class SendRecord:
    """One external contact's row of `get_groupmsg_send_result`."""

    external_userid: str
    userid: str
    status: int  # 0 not sent yet, 1 sent, 2 not a contact (any more), 3 over WeCom's limit


@dataclass(frozen=True)
class GroupMessage:
    """One row of `get_groupmsg_list_v2`: a message task created by the enterprise."""

    msgid: str
    creator: str  # the staff member's userid
    text: str
    create_time: int


@dataclass
class WeComClient:
    corp_id: str
    corp_secret: str
    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = 20
    token_fetches: int = field(default=0, init=False)  # how often gettoken was called
    _token: _Token | None = field(default=None, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.corp_id and self.corp_secret)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ----- the access token -----------------------------------------------------------------
    async def token(self, *, stale: str | None = None) -> str:
        """The cached token; a new one when there is none, it is near expiry, or it is `stale`
        (the one a call was just refused with: concurrent refusals fetch once)."""
        async with self._lock:
            cached = self._token
            if cached is not None and cached.value != stale and (
                    time.monotonic() < cached.expires_at):
                return cached.value
            url = f"{self.base_url.rstrip('/')}/cgi-bin/gettoken"
            params = {"corpid": self.corp_id, "corpsecret": self.corp_secret}
            async with self._http().get(url, params=params) as resp:
                body = await _json(resp)
            self.token_fetches += 1
            _check(body)
            lifetime = int(body.get("expires_in", 7200))
            self._token = _Token(str(body["access_token"]),
                                 time.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS, 1))
            return self._token.value

    async def call(self, path: str, payload: dict[str, Any] | None = None, *,
                   query: dict[str, str] | None = None) -> dict[str, Any]:
        """POST `payload` (GET when None) to `/cgi-bin/<path>` with the token; refreshed once on
        40014/42001."""
        token = await self.token()
        try:
            return await self._call_once(path, payload, query, token)
        except WeComError as err:
            if err.errcode not in TOKEN_ERRORS:
                raise
        token = await self.token(stale=token)
        return await self._call_once(path, payload, query, token)

    async def _call_once(self, path: str, payload: dict[str, Any] | None,
                         query: dict[str, str] | None, token: str) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}/cgi-bin/{path}"
        params = {"access_token": token, **(query or {})}
        if payload is None:
            request = self._http().get(url, params=params)
        else:
            request = self._http().post(url, params=params, json=payload)
        async with request as resp:
            body = await _json(resp)
        _check(body)
        return body

    # ----- external-contact messages --------------------------------------------------------
    async def contact_owners(self, external_userid: str) -> list[str]:
        """The staff members (userids) who have this external contact (`externalcontact/get`);
        84061 when none has."""
        body = await self.call("externalcontact/get", query={"external_userid": external_userid})
        return [str(f["userid"]) for f in body.get("follow_user", []) if f.get("userid")]

    async def add_msg_template(self, external_userid: str, sender: str, text: str) -> str:
        """Create the message task for `sender` to confirm; its msgid."""
        body = await self.call("externalcontact/add_msg_template", {
            "chat_type": "single", "external_userid": [external_userid], "sender": sender,
            "text": {"content": text}, "allow_select": False,
        })
        if external_userid in (body.get("fail_list") or []):
            raise WeComError(NOT_EXTERNAL_CONTACT)
        return str(body["msgid"])

    async def send_result(self, msgid: str, userid: str) -> list[SendRecord]:
        body = await self.call("externalcontact/get_groupmsg_send_result",
                               {"msgid": msgid, "userid": userid, "limit": 1000})
        return [SendRecord(str(r.get("external_userid", "")), str(r.get("userid", "")),
                           int(r.get("status", 0))) for r in body.get("send_list", [])]

    async def task_owners(self, msgid: str) -> list[str]:
        body = await self.call("externalcontact/get_groupmsg_task", {"msgid": msgid, "limit": 1000})
        return [str(t["userid"]) for t in body.get("task_list", []) if t.get("userid")]

    async def remind(self, msgid: str) -> None:
        await self.call("externalcontact/remind_groupmsg_send", {"msgid": msgid})

    async def cancel(self, msgid: str) -> None:
        await self.call("externalcontact/cancel_groupmsg_send", {"msgid": msgid})

    async def messages_since(self, since: int, until: int) -> list[GroupMessage]:
        """The enterprise's single-chat message tasks created in [since, until] (unix seconds)."""
        found: list[GroupMessage] = []
        cursor = ""
        while True:
            body = await self.call("externalcontact/get_groupmsg_list_v2", {
                "chat_type": "single", "start_time": since, "end_time": until,
                "filter_type": 2, "limit": 100, "cursor": cursor})
            for m in body.get("group_msg_list", []):
                found.append(GroupMessage(
                    str(m["msgid"]), str(m.get("creator", "")),
                    str((m.get("text") or {}).get("content", "")), int(m.get("create_time", 0))))
            cursor = str(body.get("next_cursor") or "")
            if not cursor:
                return found


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    resp.raise_for_status()
    body = await resp.json(content_type=None)
    if not isinstance(body, dict):
        raise WeComError(-1)
    return body


def _check(body: dict[str, Any]) -> None:
    code = int(body.get("errcode", 0))
    if code != 0:
        raise WeComError(code)
