"""The bare baseline: the plainest Temporal workflows doing the same amount of Temporal work.

`BareWorkflow` just waits (a long timer), with a signal and a query, for the start-rate, open-case
and memory figures. `BareLifecycleWorkflow` replays the shape of one of our cases: the same timers
(same durations) and the same number of activities, each a no-op (those one workflow task of ours
scheduled together run together), with the payment signal at the same point, so that the
difference to ours is what our workflow and activities add.
Default data converter, no codec, default sandbox.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

NOOP = "noop"


@activity.defn(name=NOOP)
async def noop(i: int) -> int:
    return i


@workflow.defn
class BareWorkflow:
    def __init__(self) -> None:
        self.paid = 0.0
        self.payments = 0

    @workflow.run
    async def run(self, wait_seconds: int) -> int:
        await workflow.sleep(timedelta(seconds=wait_seconds))
        return self.payments

    @workflow.signal
    def pay(self, amount: float) -> None:
        self.paid += amount
        self.payments += 1

    @workflow.query
    def status(self) -> dict[str, Any]:
        return {"paid": self.paid, "payments": self.payments}


@workflow.defn
class BareLifecycleWorkflow:
    """plan = {"before": ops, "wait_signal": bool, "after": ops};
    op = ["timer", s] | ["activity", k] (k no-op activities at once) | ["local", 1] (one no-op
    local activity)."""

    def __init__(self) -> None:
        self.paid = False

    @workflow.run
    async def run(self, plan: dict[str, Any]) -> int:
        done = await self._ops(plan["before"])
        if plan.get("wait_signal"):
            await workflow.wait_condition(lambda: self.paid)
        return done + await self._ops(plan.get("after", []))

    async def _ops(self, ops: list[list[Any]]) -> int:
        n = 0
        for kind, arg in ops:
            if kind == "timer":
                await workflow.sleep(timedelta(seconds=max(float(arg), 0.001)))
            elif kind == "local":
                n += await workflow.execute_local_activity(NOOP, 1, result_type=int,
                                                           start_to_close_timeout=timedelta(seconds=30))
            else:  # `arg` activities scheduled together, as ours did
                done = await asyncio.gather(*(
                    workflow.execute_activity(NOOP, 1, result_type=int,
                                              start_to_close_timeout=timedelta(seconds=30))
                    for _ in range(int(arg))))
                n += sum(done)
        return n

    @workflow.signal
    def pay(self, amount: float) -> None:
        self.paid = True

    @workflow.query
    def status(self) -> dict[str, Any]:
        return {"paid": self.paid}
