"""A backtest too big for one machine: the book split into shards, each shard under each policy
an activity on whatever lab workers the cluster has, then the figures of the merged cases.

The shards run on the `lab` queue (contracts.names.LAB_TASK_QUEUE), at most `parallel` at once;
each plays its loans through the lab's engine, heartbeating as it goes, and answers one compact
row per case. A shard retried (a worker lost, a heartbeat missed) plays the same loans with the
same keyed draws, so it answers the same rows. The figures are computed by a local activity: the
merged rows never travel to the server again, only the figures do (a few kilobytes).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contracts.lab_run import (
        SHARD_REFUSED,
        BookRef,
        LabFiguresInput,
        LabProgress,
        LabRunInput,
        LabRunResult,
        LabShardInput,
        LabShardResult,
    )
    from contracts.names import (
        LAB_FIGURES_ACTIVITY,
        LAB_PROGRESS_QUERY,
        LAB_SHARD_ACTIVITY,
        LAB_WORKFLOW_TYPE,
    )

# A shard heartbeats every few loans (activities/lab_shard.py); one silent this long is retried
# elsewhere.
SHARD_HEARTBEAT: Final = timedelta(minutes=2)
SHARD_TIMEOUT: Final = timedelta(hours=2)
FIGURES_TIMEOUT: Final = timedelta(minutes=10)


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """[first, stop) of each shard of a book of `size` loans."""
    step = max(1, shard_size)
    return [(first, min(first + step, size)) for first in range(0, size, step)]


def shard_book(book: BookRef, first: int, stop: int) -> BookRef:
    """The reference a shard gets: an inline book cut to the shard's loans."""
    if book.kind != "inline":
        return book
    return BookRef(kind="inline", size=stop - first, loans=book.loans[first:stop])


@workflow.defn(name=LAB_WORKFLOW_TYPE)
class LabBacktestWorkflow:
    @workflow.init
    def __init__(self, run: LabRunInput) -> None:
        self._ranges = shard_ranges(run.book.size, run.shard_size)
        self._total = len(self._ranges) * len(run.policies)
        self._loans_total = run.book.size * len(run.policies)
        self._done = 0
        self._loans_done = 0
        self._finished = False

    @workflow.run
    async def run(self, run: LabRunInput) -> LabRunResult:
        started = workflow.now()
        gate = asyncio.Semaphore(max(1, run.parallel))
        jobs = [(p, i) for p in range(len(run.policies)) for i in range(len(self._ranges))]
        shards = await asyncio.gather(*(self._shard(run, gate, p, i) for p, i in jobs))
        figures: LabRunResult = await workflow.execute_local_activity(
            LAB_FIGURES_ACTIVITY,
            LabFiguresInput(run=run, shards=list(shards),
                            seconds=(workflow.now() - started).total_seconds()),
            result_type=LabRunResult, start_to_close_timeout=FIGURES_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=3))
        self._finished = True
        return figures

    async def _shard(self, run: LabRunInput, gate: asyncio.Semaphore, policy_index: int,
                     shard: int) -> LabShardResult:
        first, stop = self._ranges[shard]
        async with gate:
            result: LabShardResult = await workflow.execute_activity(
                LAB_SHARD_ACTIVITY,
                LabShardInput(book=shard_book(run.book, first, stop),
                              policy=run.policies[policy_index], policy_index=policy_index,
                              shard=shard, first=first, stop=stop, model=run.model,
                              seed=run.seed, start=run.start, horizon_days=run.horizon_days,
                              prices=run.prices),
                result_type=LabShardResult, start_to_close_timeout=SHARD_TIMEOUT,
                heartbeat_timeout=SHARD_HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=5,
                                         non_retryable_error_types=[SHARD_REFUSED]))
        self._done += 1
        self._loans_done += stop - first
        return result

    @workflow.query(name=LAB_PROGRESS_QUERY)
    def progress(self) -> LabProgress:
        return LabProgress(shards_done=self._done, shards_total=self._total,
                           loans_done=self._loans_done, loans_total=self._loans_total,
                           finished=self._finished)
