"""The collection worker: runs case workflows and their activities on the `collections` queue.

    python worker.py              # against the configured services, else the running local stack
    python worker.py --embedded   # the same, but with no stack running, start one in-process

`python -m infra.stack` (or `make run`) runs the local stack on its own; every `python worker.py`
started beside it finds it through `.state/endpoints.json`. Workers hold no state of their own:
run as many as the load needs, on as many machines, and kill or restart any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkflowRunner

from activities.lab_shard import LabShardActivities
from activities.wiring import Providers, activities_for, close_activities
from contracts.names import LAB_TASK_QUEUE, TASK_QUEUE
from contracts.retention import PURGE_SCHEDULE_ID
from infra import log_masking
from infra.database import create_pool
from infra.settings import SendGridSettings, Settings, TwilioSettings, WeComSettings
from infra.shutdown import run_until_signalled
from infra.stack import Endpoints, NoStack, open_stack
from infra.vault_crypto import vault_keys as configured_vault_keys
from lab import shard as lab_shard
from service.errors import Unreachable
from service.retention import ensure_purge_schedule
from workflows.collection_workflow import CollectionWorkflow
from workflows.lab_workflow import LabBacktestWorkflow
from workflows.purge_workflow import RetentionPurgeWorkflow
from workflows.sandbox import sandbox_runner

log = logging.getLogger("worker")


def providers_for(twilio: TwilioSettings, sendgrid: SendGridSettings,
                  settings: Settings, wecom: WeComSettings | None = None) -> Providers:
    """What the provider activities get: the accounts given, the settings' links and timeouts."""
    if twilio.account_sid is None or twilio.auth_token is None or sendgrid.api_key is None:
        raise ValueError("provider accounts not resolved (no credentials and no emulator)")
    return Providers(
        twilio_sid=twilio.account_sid, twilio_token=twilio.auth_token,
        twilio_base_url=twilio.base_url, twilio_from=twilio.from_number,
        sendgrid_key=sendgrid.api_key, sendgrid_base_url=sendgrid.base_url,
        sendgrid_from=sendgrid.from_email, payment_link_base=settings.payment_link_base,
        http_timeout_seconds=settings.provider_timeout_seconds,
        in_flight_for=timedelta(seconds=settings.send_in_flight_seconds),
        wecom_corp_id=(wecom or settings.wecom).corp_id or "",
        wecom_secret=(wecom or settings.wecom).corp_secret or "",
        wecom_base_url=(wecom or settings.wecom).base_url,
        voice_callback_base=settings.webhook.base_url,
        voice_agent_number=settings.voice_agent_number)


def providers_from(ep: Endpoints, settings: Settings) -> Providers:
    wecom = settings.wecom
    if not wecom.configured and ep.emulator_url:
        wecom = wecom.on_emulator(ep.emulator_url)
    return providers_for(ep.twilio, ep.sendgrid, settings, wecom)


def emulator_providers(url: str, settings: Settings | None = None) -> Providers:
    """Both providers on the emulator at `url`, whatever the environment says (tests, benches)."""
    settings = settings or Settings()
    return providers_for(settings.twilio.on_emulator(url), settings.sendgrid.on_emulator(url),
                         settings, settings.wecom.on_emulator(url))


@asynccontextmanager
async def running_worker(client: Client, pool: asyncpg.Pool, providers: Providers, *,
                         task_queue: str = TASK_QUEUE, max_cached_workflows: int = 1000,
                         workflow_runner: WorkflowRunner | None = None,
                         vault_keys: Mapping[str, bytes] | None = None,
                         **kwargs: Any) -> AsyncIterator[Worker]:
    activities = activities_for(pool, providers, vault_keys=vault_keys)
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[CollectionWorkflow, RetentionPurgeWorkflow],
            activities=activities,
            workflow_runner=workflow_runner or sandbox_runner(),
            max_cached_workflows=max_cached_workflows,
            **kwargs,
        ) as worker:
            yield worker
    finally:
        await close_activities(activities)


# A shard is CPU-bound Python: a second one in the same process would only share its core.
LAB_SHARDS_PER_WORKER = 1


@asynccontextmanager
async def running_lab_worker(client: Client, *, task_queue: str = LAB_TASK_QUEUE,
                             shards: LabShardActivities | None = None,
                             **kwargs: Any) -> AsyncIterator[Worker]:
    """The strategy lab's backtests on the cluster: LabBacktestWorkflow and its shards."""
    shards = shards or LabShardActivities(lab_shard.play_loans, lab_shard.figures)
    kwargs.setdefault("max_concurrent_activities", LAB_SHARDS_PER_WORKER)
    async with Worker(client, task_queue=task_queue, workflows=[LabBacktestWorkflow],
                      activities=[shards.lab_shard, shards.lab_figures],
                      workflow_runner=sandbox_runner(), **kwargs) as worker:
        yield worker


def serve_sdk_metrics(bind: str | None = None) -> str | None:
    """The SDK's own metrics (workflow and activity task latencies, polls, cache) at
    http://<bind>/metrics in Prometheus format, from `METRICS_PORT` (`9464`, or `host:port`);
    before any client connects, since the runtime is chosen then. None when not asked for."""
    bind = bind or os.environ.get("METRICS_PORT", "").strip() or None
    if bind is None:
        return None
    address = bind if ":" in bind else f"0.0.0.0:{bind}"
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=address, counters_total_suffix=True))))
    return address


def freeze_startup_objects() -> None:
    """Take what exists once the worker runs (modules, schemas, clients: ~95,000 objects that live
    as long as the process) out of the garbage collector's scans. A full collection then walks only
    the cached cases, so its pause, which delays whatever workflow task is running (a payment's,
    say), stays short as the sticky cache fills."""
    gc.collect()
    gc.freeze()


async def main(embedded: bool) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_masking.install()
    settings = Settings()
    problems = settings.check_production()
    if problems:
        raise SystemExit("refusing to start: " + "; ".join(problems))
    metrics_at = serve_sdk_metrics()
    if metrics_at:
        log.info("worker metrics (Prometheus): http://%s/metrics", metrics_at)
    try:
        async with open_stack(settings, embedded=embedded) as ep:
            await serve(ep, settings)
    except NoStack as err:
        raise SystemExit(f"{err}; or pass --embedded to start one in this process") from None


async def purge_schedule_at_start(client: Client, task_queue: str) -> None:
    """The retention purge's daily schedule (issue 18), made by whichever worker starts first."""
    try:
        if await ensure_purge_schedule(client, task_queue):
            log.info("created the daily retention purge schedule %r", PURGE_SCHEDULE_ID)
    except Unreachable as err:  # the cases still run; the next worker start tries again
        log.warning("%s", err)


async def serve(ep: Endpoints, settings: Settings) -> None:
    pool = await create_pool(ep.dsn)
    try:
        async with running_lab_worker(ep.client, task_queue=settings.lab_task_queue), \
                running_worker(ep.client, pool, providers_from(ep, settings),
                                  task_queue=settings.task_queue,
                                  max_cached_workflows=settings.max_cached_workflows,
                                  vault_keys=configured_vault_keys(
                                      state_dir=settings.state_dir.resolve())):
            await purge_schedule_at_start(ep.client, settings.task_queue)
            freeze_startup_objects()
            if ep.ui_url:
                log.info("Temporal Web UI: %s", ep.ui_url)
            log.info("worker running on task queue %r (Ctrl-C to stop); Temporal %s; "
                     "started here: %s", settings.task_queue,
                     ep.client.service_client.config.target_host,
                     ", ".join(ep.started) or "nothing")
            await asyncio.Event().wait()
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true",
                        help="with no stack configured or running, start one in this process")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM unwind through the stack's context managers, stopping what it started.
    run_until_signalled(main(args.embedded))
    log.info("worker stopped")
