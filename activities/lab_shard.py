"""The lab workflow's activities: play one shard of a book under one policy, and compute the
figures of the merged shards (a local activity).

The case logic is not here: the worker injects the lab's functions (lab/shard.py), which drive
the engine; this module runs them off the event loop, a few loans at a time, and heartbeats
between, so a worker lost mid-shard is noticed within the heartbeat timeout and the shard is
played again elsewhere. A shard plays the same loans with the same keyed draws on every attempt:
a retry answers the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts.lab_run import (
    SHARD_REFUSED,
    LabFiguresInput,
    LabRunResult,
    LabShardInput,
    LabShardResult,
)
from contracts.names import LAB_FIGURES_ACTIVITY, LAB_SHARD_ACTIVITY

# Loans between heartbeats: a few tenths of a second of play.
HEARTBEAT_EVERY: Final = 25

# Plays the book's loans [first, stop) of the shard: one row per case (lab/merge.py's layout).
PlayLoans = Callable[[LabShardInput, int, int], list[list[Any]]]
Figures = Callable[[LabFiguresInput], LabRunResult]


class LabShardActivities:
    def __init__(self, play: PlayLoans, figures: Figures, *,
                 heartbeat_every: int = HEARTBEAT_EVERY) -> None:
        self._play = play
        self._figures = figures
        self._every = max(1, heartbeat_every)

    @activity.defn(name=LAB_SHARD_ACTIVITY)
    async def lab_shard(self, shard: LabShardInput) -> LabShardResult:
        rows: list[list[Any]] = []
        for first in range(shard.first, shard.stop, self._every):
            stop = min(first + self._every, shard.stop)
            try:
                rows += await asyncio.to_thread(self._play, shard, first, stop)
            except (ValueError, LookupError) as err:
                # A book, policy or model the engine refuses: the same on every attempt.
                raise ApplicationError(f"shard {shard.shard} of policy {shard.policy}: "
                                       f"{str(err).splitlines()[0]}", type=SHARD_REFUSED,
                                       non_retryable=True) from None
            activity.heartbeat(len(rows))
        return LabShardResult(policy_index=shard.policy_index, shard=shard.shard,
                              first=shard.first, rows=rows)

    @activity.defn(name=LAB_FIGURES_ACTIVITY)
    async def lab_figures(self, merged: LabFiguresInput) -> LabRunResult:
        try:
            return await asyncio.to_thread(self._figures, merged)
        except (ValueError, LookupError) as err:
            raise ApplicationError(f"figures: {str(err).splitlines()[0]}", type=SHARD_REFUSED,
                                   non_retryable=True) from None
