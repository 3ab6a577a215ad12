"""What a policy would do to a loan: its whole case, on a private time-skipping server.

The real workflow runs in simulation mode (workflows/simulation.py): the policy the loan would
pin, its ladder, contact windows and caps, on durable timers that the test server skips through,
so 180 days take well under a second. Nothing is sent or written and no cluster, database or
provider is needed: an operator can try a policy file before any loan follows it.

A simulation starts now, or at `as_of`. The test server's clock starts at the real time and only
moves forward, so a start in the past is made by moving the loan instead: its due date goes
forward by whole weeks (weekdays stay the same) to a start on or after the server's time, and the
timeline comes back moved by the same weeks, in the borrower's local time.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.policies import resolve
from contracts.case_io import CollectionInput, simulation_workflow_id
from contracts.messages import CaseResult, LoanInput
from contracts.names import WORKFLOW_TYPE
from infra.codec import data_converter
from infra.temporal_server import start_test_server
from policies import loader as policy_loader
from service.errors import BadInput
from workflows.collection_workflow import CollectionWorkflow
from workflows.sandbox import sandbox_runner  # the runner the real workers use

QUEUE: Final = "simulation"
WEEK: Final = timedelta(days=7)
# A UTC time in a summary ("due by 2026-12-06 06:00 UTC"), else a date (local ones included).
_WHEN: Final = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?: (\d{2}:\d{2}) UTC\b)?")


async def simulate(loan: LoanInput, *, as_of: datetime | None = None) -> CaseResult:
    """The loan's case from `as_of` (default: now) until it closes (written off, unless its
    policy ends otherwise)."""
    try:
        policy = resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        raise BadInput("policy", str(err).splitlines()[0]) from None
    env = await start_test_server(data_converter=data_converter(None))
    try:
        moved = timedelta(0)
        if as_of is not None:
            moved = await _start_at(env, as_of)
        shifted = dataclasses.replace(loan, due_date=loan.due_date + moved)
        async with simulation_worker(env):
            result = await play(env, CollectionInput(loan=shifted, policy=policy, simulate=True))
    finally:
        await env.shutdown()
    return _moved_back(result, moved, ZoneInfo(loan.timezone)) if moved else result


def simulation_worker(env: WorkflowEnvironment) -> Worker:
    """The worker simulated cases run on (the real workflow, in the real workers' sandbox)."""
    return Worker(env.client, task_queue=QUEUE, workflows=[CollectionWorkflow],
                  workflow_runner=sandbox_runner())


async def play(env: WorkflowEnvironment, inp: CollectionInput) -> CaseResult:
    """One case from `inp` on the time-skipping server `env` (a `simulation_worker` running), to
    its end, under the id a simulation runs under."""
    with env.auto_time_skipping_disabled():
        handle = await env.client.start_workflow(
            WORKFLOW_TYPE, inp, id=simulation_workflow_id(inp.loan.loan_id), task_queue=QUEUE,
            result_type=CaseResult)
        # Skip time only while waiting for the result (the unlock-once pattern).
        await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        try:
            result: CaseResult = await handle.result()
        finally:
            await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
    return result


async def _start_at(env: WorkflowEnvironment, as_of: datetime) -> timedelta:
    """Bring the server's clock to `as_of` plus whole weeks; returns those weeks."""
    now = await env.get_current_time()
    weeks = max(0, math.ceil((now - as_of) / WEEK))
    moved = weeks * WEEK
    ahead = as_of + moved - now
    if ahead > timedelta(0):
        await env.sleep(ahead)
    return moved


def _moved_back(result: CaseResult, moved: timedelta, zone: ZoneInfo) -> CaseResult:
    """The timeline of a loan moved `moved` later, told as the loan's own (local wall time, and
    the dates in each summary)."""

    def at(when: datetime) -> datetime:
        local = when.astimezone(zone).replace(tzinfo=None) - moved
        return local.replace(tzinfo=zone)

    def earlier(m: re.Match[str]) -> str:
        try:
            if m.group(2) is None:
                return (date.fromisoformat(m.group(1)) - moved).isoformat()
            utc = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}+00:00")
        except ValueError:
            return m.group(0)
        return f"{at(utc).astimezone(UTC):%Y-%m-%d %H:%M} UTC"

    def text(value: str) -> str:
        return _WHEN.sub(earlier, value)

    def detail(values: dict[str, Any]) -> dict[str, Any]:
        return {k: text(v) if isinstance(v, str) else v for k, v in values.items()}

    events = [dataclasses.replace(e, at=at(e.at), summary=text(e.summary), detail=detail(e.detail))
              for e in result.timeline or []]
    return dataclasses.replace(result, timeline=events if result.timeline is not None else None)

