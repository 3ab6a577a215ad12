"""Durable waits in policy time: the one place a case's sleep becomes a Temporal timer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.case import Case


async def sleep_until(case: Case, target: datetime | None, done: Callable[[], bool]) -> bool:
    """Sleep (in policy time) until `target` or until `done()`; True if `done()` woke us."""
    if target is None:
        await workflow.wait_condition(done)
        return True
    delay = case.clock.real_delay(case.now(), target)
    if delay <= timedelta(0):
        return bool(done())
    try:
        await workflow.wait_condition(done, timeout=delay)
        return True
    except TimeoutError:  # asyncio's, an alias of the builtin since 3.11
        return False
