"""The soak's chaos schedule, and the loops that carry it out against the stack.

- `schedule(rng, seconds)`: when each process fault happens, drawn once at the start: a worker
  SIGKILLed every 20-60 s (a replacement started at once), one dev-server restart and one
  PostgreSQL restart, apart from each other, in the middle of the run.
- `ProviderFaults`: keeps the emulator's injected faults at 10% of the send requests it has
  seen: 429 with Retry-After, 500, timeouts (an answer slower than the worker's 5 s provider
  timeout, after the message was taken) and slow answers (under it). Each fault is one use, on
  whichever SMS or e-mail request comes next.
- `Chaos.run`: the schedule, the provider faults and a supervisor that restarts a worker that
  died on its own (one started while PostgreSQL was down exits at once), until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak.stack import SoakStack

PROVIDER_FAULT_SHARE = 0.10
SEND_OUTCOMES = ("accepted", "slow", "rate_limit", "server_error")  # one per send request
TIMEOUT_DELAY = 8.0  # > the workers' PROVIDER_TIMEOUT_SECONDS (5)


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the start
    kind: str  # kill_worker, restart_temporal, restart_postgres
    down_for: float = 0.0  # how long the server stays down


def schedule(rng: random.Random, seconds: float) -> list[Event]:
    """Worker kills every 20-60 s; the two server restarts at least 30 s apart (or a third of a
    short run), in the middle half."""
    events = []
    t = rng.uniform(20, 60)
    while t < seconds:
        events.append(Event(t, "kill_worker"))
        t += rng.uniform(20, 60)
    gap = min(30.0, seconds / 3)
    first = rng.uniform(seconds * 0.25, seconds * 0.5)
    second = min(first + gap + rng.uniform(0, seconds * 0.2), seconds * 0.85)
    kinds = ["restart_temporal", "restart_postgres"]
    rng.shuffle(kinds)
    events.append(Event(first, kinds[0], rng.uniform(3, 8)))
    events.append(Event(second, kinds[1], rng.uniform(3, 8)))
    return sorted(events, key=lambda e: e.at)


@dataclass
class ProviderFaults:
    emulator_url: str
    rng: random.Random
    share: float = PROVIDER_FAULT_SHARE
    injected: Counter[str] = field(default_factory=Counter)

    async def top_up(self, http: httpx.AsyncClient) -> None:
        stats = (await http.get("/_emulator/stats")).json()
        requests = sum(stats.get(ch, {}).get(o, 0) for ch in ("sms", "email")
                       for o in SEND_OUTCOMES)
        want = int(requests * self.share / (1 - self.share)) + 1
        for _ in range(max(0, want - sum(self.injected.values()))):
            kind = self.rng.choice(["rate_limit", "server_error", "timeout", "slow"])
            spec: dict[str, Any] = {"recipient": "*", "channel": self.rng.choice(["sms", "email"]),
                                    "times": 1}
            if kind == "rate_limit":
                spec |= {"kind": "rate_limit", "retry_after": self.rng.randint(1, 3)}
            elif kind == "server_error":
                spec |= {"kind": "server_error"}
            elif kind == "timeout":
                spec |= {"kind": "slow", "delay": TIMEOUT_DELAY}
            else:
                spec |= {"kind": "slow", "delay": round(self.rng.uniform(0.5, 2.5), 2)}
            (await http.post("/_emulator/faults", json=spec)).raise_for_status()
            self.injected[kind] += 1

    async def clear(self, http: httpx.AsyncClient) -> None:
        await http.delete("/_emulator/faults")


@dataclass
class Chaos:
    stack: SoakStack
    rng: random.Random
    workers: int
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)
    kills: int = 0
    restarts: dict[str, float] = field(default_factory=dict)  # what -> seconds down
    provider: ProviderFaults | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _pause_supervisor: bool = False

    def note(self, what: str, **detail: Any) -> None:
        self.log.append({"at": round(time.monotonic() - self._t0, 1), "what": what, **detail})
        print(f"  [{self.log[-1]['at']:6.1f} s] {what} "
              + " ".join(f"{k}={v}" for k, v in detail.items()), flush=True)

    async def run(self) -> None:
        self._t0 = time.monotonic()
        self.provider = ProviderFaults(self.stack.emulator_url, self.rng)
        tasks = [asyncio.create_task(self._schedule()), asyncio.create_task(self._providers()),
                 asyncio.create_task(self._supervise())]
        try:
            await self.stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            async with httpx.AsyncClient(base_url=self.stack.emulator_url, timeout=30) as http:
                await self.provider.clear(http)

    async def _schedule(self) -> None:
        for event in schedule(self.rng, self.seconds):
            delay = event.at - (time.monotonic() - self._t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if event.kind == "kill_worker":
                await self._kill_worker()
            elif event.kind == "restart_temporal":
                self.note("dev server stopped", down_for=round(event.down_for, 1))
                t = time.monotonic()
                await self.stack.stop_temporal()
                await asyncio.sleep(event.down_for)
                await self.stack.start_temporal()
                self.restarts["dev server"] = round(time.monotonic() - t, 1)
                self.note("dev server back", down=self.restarts["dev server"])
            else:
                self.note("PostgreSQL stopped", down_for=round(event.down_for, 1))
                t = time.monotonic()
                self._pause_supervisor = True  # a worker started now would only exit
                try:
                    await self.stack.stop_postgres()
                    await asyncio.sleep(event.down_for)
                    await self.stack.start_postgres()
                finally:
                    self._pause_supervisor = False
                self.restarts["PostgreSQL"] = round(time.monotonic() - t, 1)
                self.note("PostgreSQL back", down=self.restarts["PostgreSQL"])

    async def _kill_worker(self) -> None:
        live = self.stack.live_workers()
        if not live:
            return
        victim = self.rng.choice(live)
        victim.kill()
        self.kills += 1
        replacement = self.stack.start_worker()
        self.note("worker SIGKILLed", killed=victim.name, replacement=replacement.name)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(2)
            if self._pause_supervisor:
                continue
            while len(self.stack.live_workers()) < self.workers:
                w = self.stack.start_worker()
                self.note("worker restarted after exiting on its own", worker=w.name)

    async def _providers(self) -> None:
        assert self.provider is not None
        async with httpx.AsyncClient(base_url=self.stack.emulator_url, timeout=30) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    await self.provider.top_up(http)
                await asyncio.sleep(1)

    def figures(self) -> dict[str, Any]:
        return {"worker SIGKILLs": self.kills, "server restarts (s down)": self.restarts,
                "provider faults": dict(self.provider.injected) if self.provider else {}}
