"""Durable waits in policy time: the one place a case's sleep becomes a Temporal timer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import behaviour
    from workflows.case import Case


async def sleep_until(case: Case, target: datetime | None, done: Callable[[], bool]) -> bool:
    """Sleep (in policy time) until `target` or until `done()`; True if `done()` woke us.

    A case played against a behaviour model wakes on the way for the borrower's actions
    (workflows/behaviour.py), applies them and sleeps on; without one, nothing is queued."""
    while (due := behaviour.next_action_at(case.s)) is not None and (
            target is None or due < target):
        if await _sleep(case, due, done):
            return True
        behaviour.apply_due(case)
        if done():
            return True
    return await _sleep(case, target, done)


async def _sleep(case: Case, target: datetime | None, done: Callable[[], bool]) -> bool:
    if target is None:
        await case.runtime.wait_condition(done)
        return True
    delay = case.clock.real_delay(case.exact_now(), target)
    if delay <= timedelta(0):
        case.reached(target)
        return bool(done())
    try:
        await case.runtime.wait_condition(done, timeout=delay)
        return True
    except TimeoutError:  # asyncio's, an alias of the builtin since 3.11
        case.reached(target)
        return False
