"""Run a main coroutine until it ends or SIGINT/SIGTERM cancels it, so every `async with` on the
way unwinds and stops what it started (servers, workers, child processes)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_until_signalled(main: Coroutine[Any, Any, T]) -> T | None:
    """The coroutine's result, or None when a signal stopped it."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(main)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return None
    finally:
        loop.close()
