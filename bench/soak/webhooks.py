"""A chaos proxy between the emulator's callbacks and the API's webhooks.

The emulator calls each webhook once, in order, a moment after the send. Real providers do not
promise either: SendGrid redelivers a batch it is not sure arrived, Twilio's callbacks can
overtake one another. The emulator cannot do that by itself, so it is pointed here
(WEBHOOK_BASE_URL, which the API also uses to check Twilio's signature over the URL) and this
proxy answers it at once, then delivers each call to the API some time later: some twice, some
held back so that later calls overtake them, and a call the API answers 5xx (PostgreSQL down) or
not at all is retried with backoff for up to two minutes, as SendGrid does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx
from aiohttp import web

FORWARDED_HEADERS = ("Content-Type", "X-Twilio-Signature", "X-Twilio-Email-Event-Webhook-Signature",
                     "X-Twilio-Email-Event-Webhook-Timestamp", "User-Agent")
RETRY_FOR_SECONDS = 120.0


@dataclass
class WebhookChaos:
    target: str  # the API's base URL
    rng: random.Random
    duplicate: float = 0.2  # share of calls delivered twice
    hold_back: float = 0.3  # share of calls held back 1-5 s, so that later ones overtake them
    counts: Counter[str] = field(default_factory=Counter)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _http: httpx.AsyncClient | None = None
    enabled: bool = True

    async def start(self, port: int) -> str:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._http = httpx.AsyncClient(base_url=self.target, timeout=30)
        return f"http://127.0.0.1:{port}"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        path = request.path_qs
        self.counts["received"] += 1
        copies = 2 if self.enabled and self.rng.random() < self.duplicate else 1
        if copies == 2:
            self.counts["duplicated"] += 1
        for n in range(copies):
            delay = 0.0
            if self.enabled and (n or self.rng.random() < self.hold_back):
                delay = self.rng.uniform(1, 5)
                self.counts["held back"] += 1
            task = asyncio.get_running_loop().create_task(self._deliver(path, body, headers,
                                                                        delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if path.endswith("/twilio/inbound"):  # an empty TwiML answer
            return web.Response(text="<Response></Response>", content_type="application/xml")
        return web.Response(status=200 if "sendgrid" in path else 204)

    async def _deliver(self, path: str, body: bytes, headers: dict[str, str],
                       delay: float) -> None:
        assert self._http is not None
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RETRY_FOR_SECONDS
        wait = 0.5
        while True:
            try:
                resp = await self._http.post(path, content=body, headers=headers)
                status = resp.status_code
            except httpx.HTTPError:
                status = 0
            if 200 <= status < 300:
                self.counts["delivered"] += 1
                return
            if 400 <= status < 500:
                self.counts[f"refused {status}"] += 1
                return
            if loop.time() > give_up:
                self.counts["given up"] += 1
                return
            self.counts["retried"] += 1
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10)

    async def drain(self, within: float = RETRY_FOR_SECONDS + 10) -> None:
        """Wait for every call under way to be delivered (or given up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.aclose()
