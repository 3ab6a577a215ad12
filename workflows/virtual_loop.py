"""A deterministic virtual-time event loop, and the case runtime on it: the case code without a
server.

Modelled on temporalio's workflow event loop (`_WorkflowInstanceImpl` in
temporalio/worker/_workflow_instance.py), so the case's coroutines interleave as they do in a
workflow: everything ready runs, then the wait conditions are checked in the order they were
made (which may make more ready), and only when nothing is ready does the clock move, straight to
the earliest timer; every timer due at that instant fires together, in the order they were
started, as one activation. Nothing here reads the real clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
from collections.abc import Callable, Coroutine, Generator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Timer(asyncio.TimerHandle):
    def __init__(self, seq: int, when_ns: int, callback: Callable[..., object],
                 args: tuple[Any, ...], loop: VirtualLoop,
                 context: contextvars.Context | None) -> None:
        super().__init__(when_ns / 1e9, callback, args, loop, context)
        self.seq = seq
        self.when_ns = when_ns


class VirtualLoop(asyncio.AbstractEventLoop):
    """Runs coroutines on a clock that moves only to the next timer. Only what tasks, futures,
    timers and `asyncio.wait_for` use is implemented (as in temporalio's loop); the rest of
    asyncio's loop API (sockets, subprocesses, signals) is left abstract, so type checkers call
    the class abstract: make one with `virtual_loop(start)`."""

    def __init__(self, start: datetime) -> None:
        self._time_ns = int(start.timestamp() * 1e9)
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._timers: list[tuple[int, int, _Timer]] = []  # (when, seq, timer), a heap
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        self._seq = 0
        self._exception: BaseException | None = None

    # ------------------------------------------------------------------ clock

    def time(self) -> float:
        return self._time_ns / 1e9

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)  # as workflow.now() computes it

    # --------------------------------------------------------------- driving

    def run(self, main: Coroutine[Any, Any, T], *, until: datetime | None = None) -> T | None:
        """Run `main` until it returns, or until the next thing to do is after `until` (then
        None; whatever is still waiting is dropped)."""
        limit = None if until is None else int(until.timestamp() * 1e9)
        task = self.create_task(main)
        while True:
            self._run_once()
            if self._exception is not None:
                raise self._exception
            if task.done():
                return task.result()
            if not self._advance(limit):
                task.cancel()
                self._drain()
                return None

    def _run_once(self) -> None:
        # The lab may run inside another loop (a test, a service call): it is put back after.
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                while self._ready:
                    handle = self._ready.popleft()
                    if not handle.cancelled():
                        handle._run()
                self._conditions[:] = [
                    c for c in self._conditions if not c[1].done() and not self._check(*c)]
        finally:
            asyncio.events._set_running_loop(outer)

    @staticmethod
    def _check(fn: Callable[[], bool], fut: asyncio.Future[bool]) -> bool:
        if fn():
            fut.set_result(True)
            return True
        return False

    def _advance(self, limit: int | None) -> bool:
        """Fire every timer due at the earliest pending instant; False when none is left (or
        the earliest is past `limit`)."""
        while self._timers and self._timers[0][2].cancelled():
            heapq.heappop(self._timers)
        if not self._timers:
            return False
        when = self._timers[0][0]
        if limit is not None and when > limit:
            return False
        self._time_ns = max(self._time_ns, when)
        while self._timers and self._timers[0][0] == when:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled():
                self._ready.append(timer)
        return True

    def _drain(self) -> None:
        """Let cancelled coroutines unwind (no timer fires any more)."""
        self._timers.clear()
        self._run_once()
        self._exception = None

    # ------------------------------------------------------ asyncio's loop API

    def call_soon(self, callback: Callable[[Unpack[Ts]], object], *args: *Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[[Unpack[Ts]], object],
                   *args: *Ts,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        if delay < 0:
            raise RuntimeError("Attempting to schedule timer with negative delay")
        self._seq += 1
        # Temporal's timer command carries whole nanoseconds of the float delay.
        timer = _Timer(self._seq, self._time_ns + int(delay * 1e9), callback, args, self, context)
        heapq.heappush(self._timers, (timer.when_ns, timer.seq, timer))
        return timer

    def call_at(self, when: float, callback: Callable[[Unpack[Ts]], object], *args: *Ts,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return self.call_later(round(when - self.time(), 3), callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass  # skipped when it comes up

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Generator[Any, None, T] | Coroutine[Any, Any, T], *,
                    name: str | None = None,
                    context: contextvars.Context | None = None) -> asyncio.Task[T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def get_exception_handler(self) -> None:
        return None

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        # A failed background coroutine fails the run, as it fails a workflow task.
        if self._exception is None and isinstance(exc, BaseException):
            self._exception = exc

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    # --------------------------------------------------------- wait condition

    async def wait_condition(self, fn: Callable[[], bool], timeout: float | None = None) -> None:  # noqa: ASYNC109
        fut: asyncio.Future[bool] = self.create_future()
        self._conditions.append((fn, fut))
        await asyncio.wait_for(fut, timeout)

    async def sleep(self, seconds: float) -> None:
        """A timer on this loop's virtual clock: it fires when the clock is moved past it."""
        fut: asyncio.Future[None] = self.create_future()
        handle = self.call_later(seconds, fut.set_result, None)  # cancelled with the wait
        try:
            await fut
        finally:
            handle.cancel()


def virtual_loop(start: datetime) -> VirtualLoop:
    return VirtualLoop(start)  # type: ignore[abstract]


class LabRuntime:
    """The case runtime (workflows/runtime.py) on a virtual loop: the newest code (every patch
    applies), a history that is never long, no handlers (the borrower's actions come through the
    case's own queue)."""

    def __init__(self, loop: VirtualLoop, workflow_id: str) -> None:
        self.loop = loop
        self._workflow_id = workflow_id

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    def now(self) -> datetime:
        return self.loop.now()

    async def wait_condition(self, fn: Callable[[], bool],
                             timeout: timedelta | None = None) -> None:  # noqa: ASYNC109
        await self.loop.wait_condition(
            fn, None if timeout is None else timeout.total_seconds())

    async def sleep(self, delay: timedelta) -> None:
        await self.loop.sleep(delay.total_seconds())

    def patched(self, patch_id: str) -> bool:
        return True

    def history_is_long(self, max_events: int) -> bool:
        return False

    def handlers_finished(self) -> bool:
        return True
