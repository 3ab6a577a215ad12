"""The emulator's HTTP server: provider routes, the JSON control API, the shared message log,
faults and stats, and an access log that names routes, never paths (they carry borrower data)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.emulator.faults import ANY, EMAIL, SMS, Fault, new_fault, norm, take
from infra.emulator.sendgrid import SendGridApi
from infra.emulator.twilio import TwilioApi
from infra.emulator.twilio_calls import VOICE, TwilioCallsApi
from infra.emulator.wecom import WECOM, WeComApi

log = logging.getLogger("infra.emulator")  # one name for every module of the package
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Provider(Protocol):
    """One emulated provider API: its routes, and the state of its own it forgets on reset."""

    def routes(self) -> list[web.RouteDef]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class WebhookTargets:
    """Where the emulated providers call back, and what they sign with: the account's auth token
    (Twilio), the Signed Event Webhook's private key (SendGrid, PEM)."""

    base_url: str
    twilio_auth_token: str
    sendgrid_private_key_pem: bytes
    # How long after a send its first callback comes (Twilio and SendGrid take seconds).
    delay_seconds: float = 0.3

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    @property
    def sendgrid_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.sendgrid_private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the SendGrid webhook key must be an EC (P-256) private key")
        return key


class ProviderEmulator:
    """In-memory Twilio + SendGrid server with fault injection and a JSON control API."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._stats: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._channels = {SMS, EMAIL, ANY, WECOM, VOICE}
        self.twilio = TwilioApi(self)
        self.sendgrid = SendGridApi(self)
        self.wecom = WeComApi(self)  # issue 17: WeCom external-contact messages
        self.calls = TwilioCallsApi(self)  # issue 17: Twilio's Calls API, for voice reminders
        self._providers: list[Provider] = [self.twilio, self.sendgrid, self.wecom, self.calls]
        self._extra_routes: list[web.RouteDef] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.webhooks: WebhookTargets | None = None
        self._session: ClientSession | None = None
        self._callbacks: set[asyncio.Task[None]] = set()

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator is not started")
        return self._url

    def add_routes(self, routes: list[web.RouteDef], channel: str | None = None) -> None:
        """Serve more routes (a test-only channel's provider, say); call before `start`.
        Naming the `channel` lets faults target it."""
        if self._runner is not None:
            raise RuntimeError("add_routes must be called before start")
        self._extra_routes.extend(routes)
        if channel is not None:
            self._channels.add(channel)

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
        for task in list(self._callbacks):
            task.cancel()
        for task in list(self._callbacks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._url = None, None

    # ----- webhooks --------------------------------------------------------------------------
    def configure_webhooks(self, targets: WebhookTargets | None) -> None:
        """Call our webhooks from now on (None: stop calling them)."""
        if targets is not None:
            _ = targets.sendgrid_key  # a bad key fails here, not in a callback later
        self.webhooks = targets

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a callback in the background, as the providers do after answering the request."""
        task = asyncio.get_running_loop().create_task(work)
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)

    async def callbacks_done(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait for the callbacks under way (tests)."""
        async with asyncio.timeout(timeout):
            while self._callbacks:
                await asyncio.gather(*self._callbacks, return_exceptions=True)

    async def post_webhook(self, url: str, data: bytes, headers: dict[str, str],
                           kind: str) -> tuple[int, str]:
        """POST one callback; (status, body), or (0, "") if our side did not answer."""
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=10))
        try:
            async with self._session.post(url, data=data, headers=headers) as resp:
                text = await resp.text()
                self.count("webhook", f"{kind}_{resp.status}")
                return resp.status, text
        except (ClientError, TimeoutError) as err:
            self.count("webhook", f"{kind}_unreachable")
            log.info("webhook %s not delivered: %s", kind, type(err).__name__)
            return 0, ""

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[_log_middleware])
        for provider in self._providers:
            app.add_routes(provider.routes())
        app.add_routes(self._extra_routes)
        app.add_routes([
            web.post("/_emulator/faults", self._ctl_add_fault),
            web.delete("/_emulator/faults", self._ctl_clear_faults),
            web.get("/_emulator/messages", self._ctl_messages),
            web.delete("/_emulator/messages", self._ctl_reset),
            web.get("/_emulator/stats", self._ctl_stats),
            web.get("/_emulator/health", self._ctl_health),
            web.post("/_emulator/webhooks", self._ctl_webhooks),
        ])
        return app

    # ----- in-process control ----------------------------------------------------------------
    def add_fault(self, recipient: str, kind: str, channel: str = ANY, times: int | None = None,
                  retry_after: int = 1, delay: float = 0) -> str:
        """Register a fault; the first matching active fault wins, in registration order."""
        fault = new_fault(recipient, kind, channel, times, retry_after, delay, self._channels)
        self._faults.append(fault)
        return fault.id

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset(self) -> None:
        """Forget messages, faults and stats, so one emulator can serve many tests."""
        self._messages.clear()
        self._faults.clear()
        self._stats.clear()
        for provider in self._providers:
            provider.reset()

    def messages(self, channel: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        return [dict(m) for m in self._messages if channel in (None, m["channel"])
                and (to is None or norm(to) == norm(m["to"]))]

    def stats(self) -> dict[str, dict[str, int]]:
        return {channel: dict(counts) for channel, counts in self._stats.items()}

    # ----- what provider routes share --------------------------------------------------------
    def _take_fault(self, channel: str, recipients: list[str]) -> Fault | None:
        """Consume one use of the first fault matching any recipient of this request (a hook
        tests override to see every send attempt)."""
        return take(self._faults, channel, recipients)

    def take_fault(self, channel: str, recipients: list[str]) -> Fault | None:
        return self._take_fault(channel, recipients)

    def count(self, channel: str, outcome: str) -> None:
        self._stats[channel][outcome] += 1

    def store(self, channel: str, ident: str, to: str, sender: str,
              **extra: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": ident, "channel": channel, "to": to, "from": sender, "subject": None,
            "body": None, "html": None, "custom_args": {}, "status_callback": None,
            "received_at": now().isoformat()}
        record.update(extra)
        self._messages.append(record)
        return record

    def stored(self, channel: str) -> list[dict[str, Any]]:
        """This channel's records, oldest first (not copies: provider reads only)."""
        return [m for m in self._messages if m["channel"] == channel]

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

    async def _ctl_webhooks(self, request: web.Request) -> web.Response:
        """{"base_url": ..., "twilio_auth_token": ..., "sendgrid_private_key_pem": ...} or
        {"base_url": null} to stop calling back."""
        try:
            spec = await request.json()
            targets = None if not spec.get("base_url") else WebhookTargets(
                spec["base_url"], spec["twilio_auth_token"],
                spec["sendgrid_private_key_pem"].encode(),
                float(spec.get("delay_seconds", 0.3)))
            self.configure_webhooks(targets)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": type(exc).__name__}, status=400)
        return web.Response(status=204)

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def now() -> datetime:
    return datetime.now(UTC)


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
