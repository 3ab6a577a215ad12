"""The collection worker: runs case workflows and their activities on the `collections` queue.

    python worker.py              # against the configured stack (TEMPORAL_ADDRESS, DATABASE_URL, ...)
    python worker.py --embedded   # starts what is not configured: dev server, PostgreSQL, emulator

Workers hold no state of their own: run as many as the load needs, on as many machines.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.contacts import ContactActivities
from activities.email import EmailActivities, sendgrid_client
from activities.outbox import Outbox
from activities.policies import resolve_policy
from activities.records import RecordActivities
from activities.sms import SmsActivities, twilio_client
from activities.tasks import TaskActivities
from infra import log_masking
from infra.database import create_pool
from infra.settings import Settings
from infra.stack import Endpoints, LocalStack
from workflows.collection_workflow import CollectionWorkflow
from contracts.names import TASK_QUEUE

log = logging.getLogger("worker")


@dataclasses.dataclass
class Providers:
    twilio_sid: str
    twilio_token: str
    twilio_base_url: str | None
    twilio_from: str
    sendgrid_key: str
    sendgrid_base_url: str | None
    sendgrid_from: str
    payment_link_base: str = "https://pay.lender.example/loan"
    http_timeout_seconds: float = 20
    in_flight_for: timedelta = timedelta(seconds=30)

    @classmethod
    def from_endpoints(cls, ep: Endpoints, settings: Settings) -> Providers:
        return cls(ep.twilio_sid, ep.twilio_token, ep.twilio_base_url, settings.twilio_from_number,
                   ep.sendgrid_key, ep.sendgrid_base_url, settings.sendgrid_from_email,
                   settings.payment_link_base, settings.provider_timeout_seconds,
                   timedelta(seconds=settings.send_in_flight_seconds))


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our `workflows` package keeps no module-level state, so it is imported once and shared by
    # every case rather than re-imported into each case's sandbox (that cost ~0.5 MiB and ~40 ms
    # per case). The price: the sandbox no longer polices calls made from our modules, so the
    # replay tests and the review hook's grep are what keep them deterministic. The pydantic
    # models cross the boundary unchanged, and the contact-window rules
    # need real ZoneInfo objects (the sandbox's restricted proxy cannot be a tzinfo).
    defaults = SandboxRestrictions.default
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(
            defaults,
            invalid_module_members=defaults.invalid_module_members.with_child_unrestricted("zoneinfo"),
        ).with_passthrough_modules("pydantic", "pydantic_core", "contracts", "policies", "workflows")
    )


def activities_for(pool: asyncpg.Pool, p: Providers) -> list:
    outbox = Outbox(pool, in_flight_for=p.in_flight_for)
    sms = SmsActivities(twilio_client(p.twilio_sid, p.twilio_token, p.twilio_base_url, p.http_timeout_seconds),
                        p.twilio_from, outbox, p.payment_link_base)
    email = EmailActivities(sendgrid_client(p.sendgrid_key, p.sendgrid_base_url), p.sendgrid_from,
                            outbox, p.payment_link_base, p.http_timeout_seconds)
    records, contacts, tasks = RecordActivities(pool), ContactActivities(pool), TaskActivities(pool)
    return [
        resolve_policy,
        records.record, records.record_legal_action,
        contacts.reserve_contact, contacts.record_contact,
        sms.send_sms, email.send_email,
        tasks.create_task, tasks.close_task,
    ]


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
            async with running_worker(ep.client, pool, Providers.from_endpoints(ep, settings),
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
