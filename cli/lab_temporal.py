"""`collect lab run --on-temporal`: the backtest as a workflow on the cluster's lab workers
(`python worker.py` runs one), with a progress bar of the shards done, then the same tables,
JSON and chart as a run on this machine."""

from __future__ import annotations

import asyncio
from typing import Final

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.plumbing import err, run
from contracts.lab_run import LabRunInput, LabRunResult
from lab.backtest import Backtest
from lab.merge import from_wire
from service import lab_runs
from service.connection import Connections
from service.errors import Unreachable

POLL_SECONDS: Final = 0.5


def run_on_temporal(arg: LabRunInput) -> Backtest:
    async def work(c: Connections) -> Backtest:
        client = await c.temporal()
        workflow_id = await lab_runs.start(client, arg, task_queue=c.settings.lab_task_queue)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("shards"), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            shards = bar.add_task(workflow_id, total=None)
            waiting: asyncio.Task[LabRunResult] = asyncio.create_task(
                lab_runs.result(client, workflow_id))
            while not waiting.done():
                try:
                    p = await lab_runs.progress(client, workflow_id)
                    bar.update(shards, completed=p.shards_done, total=p.shards_total)
                except Unreachable:  # no lab worker has taken the run yet
                    pass
                await asyncio.wait({waiting}, timeout=POLL_SECONDS)
            done = waiting.result()
        err.print(f"{workflow_id}: {len(arg.policies)} policies x {arg.book.size} loans "
                  f"on the cluster")
        return from_wire(done.figures)

    return run(work)
