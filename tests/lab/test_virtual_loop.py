"""The lab's runtime sleeps on its virtual clock: hours pass at once, and in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from workflows.virtual_loop import LabRuntime, virtual_loop

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_sleeps_move_the_virtual_clock_in_order() -> None:
    loop = virtual_loop(START)
    rt = LabRuntime(loop, "lab-1")
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, hours: int) -> None:
        await rt.sleep(timedelta(hours=hours))
        woke.append((name, rt.now()))

    async def main() -> None:
        await asyncio.gather(sleeper("late", 5), sleeper("early", 2))

    loop.run(main())
    assert woke == [("early", START + timedelta(hours=2)), ("late", START + timedelta(hours=5))]
