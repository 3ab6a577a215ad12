"""Actions: what one real default-ladder lifecycle asks of Temporal, against the minimum it must.

One recorded case (default policy, to write-off at D+180; SMS and e-mail through the emulator,
every record in PostgreSQL) runs on the time-skipping server through the real worker
(`worker.running_worker`, in this process, as bench/simulation.py runs its recorded cases), after
one warm-up lifecycle. Its history (every run of its continue-as-new chain) is counted by kind:
workflow tasks, activities by type (scheduled, completed, retries), local activities (markers),
timers (started, fired, cancelled), signals, updates, search-attribute upserts.

The minimum comes from the same history: one activity per message sent (a send activity that
completed), per agent task created, per legal action and per payment received, plus the timers
that fired. Two ratios, actual / minimum (the table's `bare` column holds the minimum):
- case actions: activities (and their retries) + local activities + timers started, against the
  minimum above (issue 21: target <= 1.3);
- Cloud actions (what Temporal Cloud bills): the same plus workflow starts (continue-as-new
  included), signals, updates and upserts, against the minimum plus the starts, signals and
  updates (those come from outside the case).
Also the test server's CPU, and this process's (client and worker), for the measured lifecycle.

    python -m bench.actions
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from bench.common import LOCAL_TZ, log, make_loan
from bench.measure import Sampler
from bench.report import Report, load_now, run
from bench.stack import TWILIO_SID, Stack

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from temporalio.client import Client

TARGET = 1.3
QUEUE = "actions-collections"
LOCAL_MARKER = "core_local_activity"
T = TypeVar("T")


@dataclass
class ActionCount:
    """One case's history (all its runs), counted by kind."""

    runs: int = 0
    events: int = 0
    workflow_tasks: int = 0
    scheduled: Counter[str] = field(default_factory=Counter)  # activity type -> scheduled
    completed: Counter[str] = field(default_factory=Counter)  # activity type -> completed
    retries: int = 0  # attempts after the first, of activities that finished
    local_activities: int = 0
    timers_started: int = 0
    timers_fired: int = 0
    timers_cancelled: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    updates: Counter[str] = field(default_factory=Counter)  # accepted updates, by name
    upserts: int = 0

    @property
    def activities(self) -> int:
        return sum(self.scheduled.values())

    def as_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "events": self.events, "workflow_tasks": self.workflow_tasks,
                "activities": self.activities, "activities_by_type": dict(self.scheduled),
                "completed_by_type": dict(self.completed), "retries": self.retries,
                "local_activities": self.local_activities, "timers_started": self.timers_started,
                "timers_fired": self.timers_fired, "timers_cancelled": self.timers_cancelled,
                "signals": dict(self.signals), "updates": dict(self.updates),
                "upserts": self.upserts}


@dataclass
class Minimum:
    """What the case could not do with less: derived from what its history shows it did."""

    messages: int
    tasks: int
    legal: int
    payments: int
    timers: int

    @property
    def total(self) -> int:
        return self.messages + self.tasks + self.legal + self.payments + self.timers


async def count_actions(client: Client, workflow_id: str, first_run_id: str) -> ActionCount:
    """Walk the case's runs from its first, following continue-as-new."""
    from temporalio.api.enums.v1 import EventType as E

    c = ActionCount()
    run_id: str | None = first_run_id
    while run_id:
        hist = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        c.runs += 1
        c.events += len(hist.events)
        run_id = None
        types: dict[int, str] = {}  # scheduled event id -> activity type
        for ev in hist.events:
            et = ev.event_type
            if et == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                c.workflow_tasks += 1
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = ev.activity_task_scheduled_event_attributes.activity_type.name
                types[ev.event_id] = name
                c.scheduled[name] += 1
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                # Written when the activity finishes, with the attempt that finished it.
                c.retries += max(0, ev.activity_task_started_event_attributes.attempt - 1)
            elif et == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                c.completed[types.get(sid, "?")] += 1
            elif (et == E.EVENT_TYPE_MARKER_RECORDED
                  and ev.marker_recorded_event_attributes.marker_name == LOCAL_MARKER):
                c.local_activities += 1
            elif et == E.EVENT_TYPE_TIMER_STARTED:
                c.timers_started += 1
            elif et == E.EVENT_TYPE_TIMER_FIRED:
                c.timers_fired += 1
            elif et == E.EVENT_TYPE_TIMER_CANCELED:
                c.timers_cancelled += 1
            elif et == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                c.signals[ev.workflow_execution_signaled_event_attributes.signal_name] += 1
            elif et == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                a = ev.workflow_execution_update_accepted_event_attributes
                c.updates[a.accepted_request.input.name] += 1
            elif et == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
                c.upserts += 1
            elif et == E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                run_id = ev.workflow_execution_continued_as_new_event_attributes \
                    .new_execution_run_id
    return c


def _sends() -> set[str]:
    from contracts.channels import CHANNELS

    return {spec.activity for spec in CHANNELS.values() if spec.activity}


def minimum(c: ActionCount) -> Minimum:
    from contracts.activity_io import CREATE_TASK, RECORD_LEGAL_ACTION
    from contracts.names import Signal, Update

    return Minimum(
        messages=sum(n for name, n in c.completed.items() if name in _sends()),
        tasks=c.completed[CREATE_TASK], legal=c.completed[RECORD_LEGAL_ACTION],
        payments=c.signals[Signal.PAY] + c.updates[Update.PAY], timers=c.timers_fired)


def case_actions(c: ActionCount) -> int:
    return c.activities + c.retries + c.local_activities + c.timers_started


def cloud_actions(c: ActionCount) -> int:
    return (case_actions(c) + c.runs + sum(c.signals.values()) + sum(c.updates.values())
            + c.upserts)


def cloud_minimum(c: ActionCount, m: Minimum) -> int:
    return m.total + c.runs + sum(c.signals.values()) + sum(c.updates.values())


async def main(args: argparse.Namespace) -> Report:
    from zoneinfo import ZoneInfo

    from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest

    from activities.wiring import Providers
    from contracts.activity_io import CREATE_TASK, RECORD_LEGAL_ACTION
    from contracts.case_io import CollectionInput
    from contracts.messages import CaseResult, CaseState
    from contracts.names import WORKFLOW_TYPE
    from worker import running_worker

    report = Report("actions", params={
        "policy": "default (standard ladder, write-off at D+180)",
        "case": "recorded (emulator, PostgreSQL), time-skipping server, one warm-up first"})
    report.load_before = load_now()
    async with Stack(server="test") as st:
        env = st.env
        url = st.emulator.url
        providers = Providers(twilio_sid=TWILIO_SID, twilio_token="bench-token",
                              twilio_base_url=url, twilio_from="+15005550006",
                              sendgrid_key="SG.bench-key", sendgrid_base_url=url,
                              sendgrid_from="collections@lender.example", http_timeout_seconds=5)

        async def unlocked(awaitable: Awaitable[T]) -> T:
            await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            try:
                return await awaitable
            finally:
                await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())

        async def lifecycle(k: int) -> tuple[str, str, CaseResult]:
            today = (await env.get_current_time()).astimezone(ZoneInfo(LOCAL_TZ)).date()
            loan = make_loan(f"ACT{k:05d}", today + timedelta(days=5), k)
            wid = f"actions-{k}"
            with env.auto_time_skipping_disabled():
                # By type name: the run method takes the workflow's CaseInput; a caller sends this.
                h = await st.client.start_workflow(
                    WORKFLOW_TYPE, CollectionInput(loan=loan), id=wid, task_queue=QUEUE,
                    result_type=CaseResult)
                result = await asyncio.wait_for(unlocked(h.result()), args.timeout)
            assert h.first_execution_run_id is not None
            return wid, h.first_execution_run_id, result

        with Sampler() as s:
            s.add("process", os.getpid())
            s.add("server", st.server_ps.pid)
            async with running_worker(st.client, st.pool, providers, task_queue=QUEUE):
                log("warm-up lifecycle")
                warm = await count_actions(st.client, *(await lifecycle(0))[:2])
                c0, s0 = s.cpu_seconds("process"), s.cpu_seconds("server")
                t0 = time.perf_counter()
                wid, run_id, result = await lifecycle(1)
                wall = time.perf_counter() - t0
                cpu_p, cpu_s = s.cpu_seconds("process") - c0, s.cpu_seconds("server") - s0
                counts = await count_actions(st.client, wid, run_id)
    in_minimum = _sends() | {CREATE_TASK, RECORD_LEGAL_ACTION}
    m = minimum(counts)
    if result.state != CaseState.WRITTEN_OFF:
        report.notes.append(f"WARNING: the lifecycle ended {result.state}, not written off")
    if (warm.scheduled, warm.timers_started) != (counts.scheduled, counts.timers_started):
        report.notes.append(f"the warm-up lifecycle differed: {warm.activities} activities "
                            f"{dict(warm.scheduled)}, {warm.timers_started} timers")
    outside = {k: n for k, n in counts.completed.items() if k not in in_minimum}
    report.notes.append(f"completed activities outside the minimum: {outside}")
    for name, n in sorted(counts.scheduled.items(), key=lambda kv: -kv[1]):
        done = counts.completed[name]
        report.add(f"activity {name}", n, unit="" if done == n else f"({done} completed)")
    report.add("activities (all types)", counts.activities)
    report.add("activity retries", counts.retries)
    report.add("local activities (markers)", counts.local_activities)
    report.add("timers started", counts.timers_started)
    report.add("timers cancelled", counts.timers_cancelled)
    report.add("signals", sum(counts.signals.values()))
    report.add("updates", sum(counts.updates.values()))
    report.add("search-attribute upserts", counts.upserts)
    report.add("workflow tasks", counts.workflow_tasks)
    report.add("minimum: messages sent", m.messages)
    report.add("minimum: agent tasks created", m.tasks)
    report.add("minimum: legal actions", m.legal)
    report.add("minimum: payments", m.payments)
    report.add("minimum: timers fired", m.timers)
    actual = case_actions(counts)
    report.add("case actions vs minimum (bare = minimum)", actual, m.total,
               target=f"<= {TARGET}x", met=actual <= TARGET * m.total)
    report.add("Cloud actions vs minimum (bare = minimum)", cloud_actions(counts),
               cloud_minimum(counts, m))
    report.add("test server CPU per lifecycle", round(1000 * cpu_s, 1), unit="ms")
    report.add("client+worker CPU per lifecycle", round(1000 * cpu_p, 1), unit="ms")
    report.add("wall time per lifecycle", round(1000 * wall, 1), unit="ms")
    report.extra["history"] = counts.as_json()
    report.extra["minimum"] = m.__dict__
    report.notes.append(
        f"{counts.runs} run(s), {counts.events} events; case actions = activities + retries + "
        f"local activities + timers started; minimum = messages + agent tasks + legal actions + "
        f"payments + timers fired; Cloud adds starts, signals, updates (and upserts, actual only)")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-write", action="store_true",
                   help="do not merge into bench/results/latest.json")
    p.add_argument("--timeout", type=float, default=600, help="bound on one lifecycle (s)")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
