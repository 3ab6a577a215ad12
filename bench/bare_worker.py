"""The bare baseline's worker, in a process of its own: `python -m bench.bare_worker`.

Configured like ours from the environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TASK_QUEUE,
MAX_CACHED_WORKFLOWS. Default data converter, default sandbox, no codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare import BareLifecycleWorkflow, BareWorkflow, noop


async def main() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"],
                                  namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"))
    async with Worker(
        client,
        task_queue=os.environ.get("TASK_QUEUE", "bench-bare"),
        workflows=[BareWorkflow, BareLifecycleWorkflow],
        activities=[noop],
        max_cached_workflows=int(os.environ.get("MAX_CACHED_WORKFLOWS", "1000")),
    ):
        print("bare worker ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
