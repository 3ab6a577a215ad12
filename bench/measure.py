"""Measuring: percentiles and latency samples, RSS and CPU of named processes, sizes on disk, and
the shape of a workflow run read from its history."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from temporalio.client import WorkflowHandle

from bench.common import log

# ----------------------------------------------------------------------------- figures


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile by linear interpolation (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max in milliseconds of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50": _r(pct(ms, 50)), "p99": _r(pct(ms, 99)), "max": _r(max(ms) if ms else None),
            "samples": len(ms)}


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def mib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 1)


def file_size(path: Path) -> int:
    """Size of an SQLite database with its -wal and -shm files."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


async def timed_samples(fn: Callable[[int], Awaitable[Any]], samples: int, *,
        budget: float) -> list[float]:
    """Run `fn(i)` one after another, `samples` times or until `budget` seconds; latencies (s).

    A latency is the time `fn` took, or what it returns if that is a float (it timed itself)."""
    out: list[float] = []
    t_end = time.monotonic() + budget
    for i in range(samples):
        if time.monotonic() > t_end:
            log(f"  latency sampling stopped at {i} samples (time budget {budget:g}s)")
            break
        t = time.perf_counter()
        r = await fn(i)
        out.append(r if isinstance(r, float) else time.perf_counter() - t)
    return out


# ---------------------------------------------------------------------------- sampling


@dataclass
class _Track:
    ps: psutil.Process
    peak_rss: int = 0
    last_rss: int = 0


class Sampler:
    """Samples RSS of named processes in a thread; CPU seconds are read on demand.

    `with Sampler(interval) as s:` then `s.add("worker", pid)`; `s.peak("worker")` is the highest
    RSS seen since the last `s.reset_peaks()`, `s.cpu("worker")` the process's user+system seconds
    (None once it has exited; `s.cpu_seconds("worker")` raises instead, for CPU differences).
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self._tracks[name] = _Track(psutil.Process(pid))
        self._sample()

    def remove(self, name: str) -> None:
        with self._lock:
            self._tracks.pop(name, None)

    def _sample(self) -> None:
        with self._lock:
            tracks = list(self._tracks.values())
        for t in tracks:
            try:
                rss = t.ps.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            t.last_rss = rss
            t.peak_rss = max(t.peak_rss, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def reset_peaks(self) -> None:
        self._sample()
        with self._lock:
            for t in self._tracks.values():
                t.peak_rss = t.last_rss

    def peak(self, name: str) -> int | None:
        self._sample()
        t = self._tracks.get(name)
        return t.peak_rss if t else None

    def rss(self, name: str) -> int | None:
        self._sample()
        t = self._tracks.get(name)
        return t.last_rss if t else None

    def cpu_seconds(self, name: str) -> float:
        """`cpu(name)` of a process that must still be running: raises rather than None."""
        seconds = self.cpu(name)
        if seconds is None:
            raise RuntimeError(f"no CPU reading of {name!r}: not sampled, or it has exited")
        return seconds

    def cpu(self, name: str) -> float | None:
        t = self._tracks.get(name)
        if t is None:
            return None
        try:
            c = t.ps.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return c.user + c.system

    async def wait_idle(self, name: str, *, below: float = 0.05, window: float = 2.0,
                        timeout: float = 600,  # noqa: ASYNC109 - gives up with a warning, not an error
                        check: Callable[[], Awaitable[bool]] | None = None) -> float:
        """Wait until `name` used less than `below` of a core over `window` seconds (and `check()`
        holds, if given); returns the seconds waited (the idle window included)."""
        t0 = time.monotonic()
        last = self.cpu(name) or 0.0
        while time.monotonic() - t0 < timeout:
            await asyncio.sleep(window)
            now = self.cpu(name) or 0.0
            busy = (now - last) / window
            last = now
            if busy < below and (check is None or await check()):
                return time.monotonic() - t0
        log(f"warning: {name} still busy after {timeout:g}s")
        return time.monotonic() - t0


# --------------------------------------------------------------------------- histories


@dataclass
class HistoryShape:
    """What one workflow run did, from its history: the plan a bare replica follows."""

    events: int
    activities: int
    timers: int
    timers_cancelled: int
    signals: int
    upserts: int
    workflow_tasks: int
    history_bytes: int
    activity_types: dict[str, int]
    local_activities: int
    # Bare replica: ops before the first signal, then after it. Each op is ["timer", seconds],
    # ["activity", k]: k activities scheduled by one workflow task (ours runs them concurrently), or
    # ["local", 1]: one local activity (ours awaits each before the next).
    before_signal: list[list[Any]]
    after_signal: list[list[Any]]

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("before_signal",
            "after_signal")}


async def history_shape(handle: WorkflowHandle[Any, Any]) -> HistoryShape:
    from temporalio.api.enums.v1 import EventType

    hist = await handle.fetch_history()
    ops_before: list[list[Any]] = []
    ops_after: list[list[Any]] = []
    ops = ops_before
    acts: dict[str, int] = {}
    n_act = n_local = n_timer = n_cancel = n_sig = n_up = n_wft = 0
    timers: dict[int, float] = {}
    batch_open = False  # the previous command event was an activity scheduled by the same task
    for ev in hist.events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            n_act += 1
            name = ev.activity_task_scheduled_event_attributes.activity_type.name
            acts[name] = acts.get(name, 0) + 1
            if batch_open and ops and ops[-1][0] == "activity":
                ops[-1][1] += 1
            else:
                ops.append(["activity", 1])
            batch_open = True
            continue
        elif (et == EventType.EVENT_TYPE_MARKER_RECORDED
              and ev.marker_recorded_event_attributes.marker_name == "core_local_activity"):
            n_local += 1
            ops.append(["local", 1])
        elif et == EventType.EVENT_TYPE_TIMER_STARTED:
            n_timer += 1
            a = ev.timer_started_event_attributes
            secs = a.start_to_fire_timeout.ToTimedelta().total_seconds()
            timers[ev.event_id] = secs
            ops.append(["timer", round(secs, 3)])
        elif et == EventType.EVENT_TYPE_TIMER_CANCELED:
            n_cancel += 1
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            n_sig += 1
            ops = ops_after
        elif et == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            n_up += 1
            continue  # a command of the same task: does not end an activity batch
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            n_wft += 1
        batch_open = False
    return HistoryShape(
        events=len(hist.events), activities=n_act, timers=n_timer, timers_cancelled=n_cancel,
        signals=n_sig, upserts=n_up, workflow_tasks=n_wft, history_bytes=sum(e.ByteSize(
                ) for e in hist.events),
        activity_types=acts, local_activities=n_local, before_signal=ops_before,
        after_signal=ops_after,
    )
