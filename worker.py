"""The collection worker: runs case workflows and their activities on the `collections` queue.

    python worker.py              # against the configured stack (TEMPORAL_ADDRESS, DATABASE_URL, ...)
    python worker.py --embedded   # starts what is not configured: dev server, PostgreSQL, emulator

Workers hold no state of their own: run as many as the load needs, on as many machines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner

from activities.sms import SmsActivities
from activities.wiring import Providers, activities_for
from infra import log_masking
from infra.database import create_pool
from infra.settings import Settings
from infra.stack import Endpoints, LocalStack
from workflows.collection_workflow import CollectionWorkflow
from workflows.sandbox import sandbox_runner
from contracts.names import TASK_QUEUE

log = logging.getLogger("worker")


def providers_from(ep: Endpoints, settings: Settings) -> Providers:
    return Providers(ep.twilio_sid, ep.twilio_token, ep.twilio_base_url, settings.twilio_from_number,
                     ep.sendgrid_key, ep.sendgrid_base_url, settings.sendgrid_from_email,
                     settings.payment_link_base, settings.provider_timeout_seconds,
                     timedelta(seconds=settings.send_in_flight_seconds))


@asynccontextmanager
async def running_worker(client: Client, pool: asyncpg.Pool, providers: Providers, *,
                         task_queue: str = TASK_QUEUE, max_cached_workflows: int = 1000,
                         workflow_runner: WorkflowRunner | None = None, **kwargs) -> AsyncIterator[Worker]:
    activities = activities_for(pool, providers)
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[CollectionWorkflow],
            activities=activities,
            workflow_runner=workflow_runner or sandbox_runner(),
            max_cached_workflows=max_cached_workflows,
            **kwargs,
        ) as worker:
            yield worker
    finally:
        # The Twilio client holds an aiohttp session: close it ("Unclosed client session").
        for fn in activities:
            if isinstance(getattr(fn, "__self__", None), SmsActivities):
                await fn.__self__.client.http_client.close()


def freeze_startup_objects() -> None:
    """Take what exists once the worker runs (modules, schemas, clients: ~95,000 objects that live
    as long as the process) out of the garbage collector's scans. A full collection then walks only
    the cached cases, so its pause, which delays whatever workflow task is running (a payment's,
    say), stays short as the sticky cache fills."""
    gc.collect()
    gc.freeze()


async def main(embedded: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_masking.install()
    settings = Settings()
    if not embedded and (settings.embedded_temporal or settings.embedded_database):
        raise SystemExit("TEMPORAL_ADDRESS and DATABASE_URL are not set: pass --embedded to start "
                         "the local stack, or set them to use existing services")
    problems = settings.check_production()
    if problems:
        raise SystemExit("refusing to start: " + "; ".join(problems))
    async with LocalStack(settings) as ep:
        pool = await create_pool(ep.dsn)
        try:
            async with running_worker(ep.client, pool, providers_from(ep, settings),
                                      task_queue=settings.task_queue,
                                      max_cached_workflows=settings.max_cached_workflows):
                freeze_startup_objects()
                if ep.ui_url:
                    log.info("Temporal Web UI: %s", ep.ui_url)
                log.info("worker running on task queue %r (Ctrl-C to stop); started: %s",
                         settings.task_queue, ", ".join(ep.started) or "nothing")
                await asyncio.Event().wait()
        finally:
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true", help="start the local stack for what is not configured")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args.embedded))
    # Ctrl-C and SIGTERM unwind through the stack's context managers, stopping what it started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        log.info("worker stopped")
    finally:
        loop.close()
