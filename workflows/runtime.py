"""What the case code needs from whatever runs it: the time, waits, patch markers, its id.

`TemporalRuntime` is the workflow's (temporalio.workflow); the strategy lab gives a virtual-time one
(workflows/virtual_loop.py), so the same case code runs without a server. The case code reaches
Temporal only through this and its effects (workflows/effects.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow


class CaseRuntime(Protocol):
    @property
    def workflow_id(self) -> str: ...

    def now(self) -> datetime: ...

    async def wait_condition(self, fn: Callable[[], bool],
                             timeout: timedelta | None = None) -> None:  # noqa: ASYNC109
        """Until `fn()` holds; TimeoutError (the builtin) after `timeout`."""
        ...

    async def sleep(self, delay: timedelta) -> None: ...

    def patched(self, patch_id: str) -> bool: ...

    def history_is_long(self, max_events: int) -> bool:
        """Time to continue as new."""
        ...

    def handlers_finished(self) -> bool: ...


class TemporalRuntime:
    """The running workflow's: every call is the temporalio.workflow one it names."""

    @property
    def workflow_id(self) -> str:
        return workflow.info().workflow_id

    def now(self) -> datetime:
        return workflow.now()

    async def wait_condition(self, fn: Callable[[], bool],
                             timeout: timedelta | None = None) -> None:  # noqa: ASYNC109
        await workflow.wait_condition(fn, timeout=timeout)

    async def sleep(self, delay: timedelta) -> None:
        await workflow.sleep(delay)

    def patched(self, patch_id: str) -> bool:
        return workflow.patched(patch_id)

    def history_is_long(self, max_events: int) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > max_events)

    def handlers_finished(self) -> bool:
        return workflow.all_handlers_finished()


class ClockRuntime:
    """Only a clock: for the pure parts of a case (its decisions, its record) outside any run,
    as in unit tests. Waiting needs a real runtime."""

    def __init__(self, now: Callable[[], datetime], workflow_id: str = "") -> None:
        self.now = now
        self._workflow_id = workflow_id

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    async def wait_condition(self, fn: Callable[[], bool],
                             timeout: timedelta | None = None) -> None:  # noqa: ASYNC109
        raise RuntimeError("a clock-only runtime cannot wait")

    async def sleep(self, delay: timedelta) -> None:
        raise RuntimeError("a clock-only runtime cannot wait")

    def patched(self, patch_id: str) -> bool:
        return True

    def history_is_long(self, max_events: int) -> bool:
        return False

    def handlers_finished(self) -> bool:
        return True
