"""Simulation: whole default-ladder lifecycles (to write-off at D+180) on the time-skipping server.

Ours: CollectionWorkflow in simulation mode (`CollectionInput.simulate`, workflows/simulation.py):
the default policy resolved by its local activity, the same ladder, rules and timers as a real
case, with nothing sent or written. Bare: BareLifecycleWorkflow replaying the shape of our first
lifecycle's history (same timers and durations, same activities), its worker in this process too,
on the same server. Each side runs `--n` lifecycles one after another (start, unlock time
skipping, await the result, lock), then `--concurrent` at once with the unlock-once pattern of
temporal-notes.md (start all; unlock; gather; lock).

Then `--recorded` lifecycles of a real case (SMS and e-mail through the emulator, every record in
PostgreSQL) against the bare replica of that shape, one after another: what a simulation saves.

Figures: ms per lifecycle (sequential, p50 and mean), lifecycles/s (concurrent), CPU seconds of
this process (client and worker) and of the test server per lifecycle.

    python -m bench.simulation --n 20 --concurrent 100 --recorded 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio.client import WorkflowHandle

from bench.bare import BareLifecycleWorkflow, noop
from bench.common import LOCAL_TZ, base_parser, log, make_loan
from bench.measure import Sampler, history_shape, ms_summary
from bench.report import Report, load_now, run
from bench.stack import TWILIO_SID, Stack

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

TARGET_MS = 100
OUR_Q, BARE_Q = "sim-collections", "sim-bare"
T = TypeVar("T")
Start = Callable[[str], Awaitable[WorkflowHandle[Any, Any]]]


async def _today(env: WorkflowEnvironment) -> date:
    from zoneinfo import ZoneInfo

    return (await env.get_current_time()).astimezone(ZoneInfo(LOCAL_TZ)).date()


async def main(args: argparse.Namespace) -> Report:
    from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    from activities.wiring import Providers
    from contracts.case_io import CollectionInput
    from contracts.messages import CaseResult, CaseState
    from contracts.names import WORKFLOW_TYPE
    from worker import running_worker

    report = Report("simulation", params={
        "n_sequential": args.n, "n_concurrent": args.concurrent, "n_recorded": args.recorded,
        "mode": "simulate (nothing sent or written)",
        "policy": "default (standard ladder, write-off at D+180)"})
    report.load_before = load_now()
    res: dict[str, dict[str, Any]] = {"ours": {}, "bare": {}, "ours_recorded": {},
                                      "bare_recorded": {}}
    async with Stack(server="test") as st:
        env = st.env
        emulator_url = st.emulator.url
        providers = Providers(twilio_sid=TWILIO_SID, twilio_token="bench-token",
                              twilio_base_url=emulator_url, twilio_from="+15005550006",
                              sendgrid_key="SG.bench-key", sendgrid_base_url=emulator_url,
                              sendgrid_from="collections@lender.example", http_timeout_seconds=5)
        seq = 0

        async def start_ours(tag: str, simulate: bool = True) -> WorkflowHandle[Any, CaseResult]:
            nonlocal seq
            seq += 1
            k = seq
            loan = make_loan(f"SIM{tag}{k:05d}", await _today(env) + timedelta(days=5), k)
            # By type name: the run method takes the workflow's CaseInput (which adds the state
            # carried through continue-as-new); a caller sends this.
            return await st.client.start_workflow(WORKFLOW_TYPE,
                                                  CollectionInput(loan=loan, simulate=simulate),
                                                  id=f"sim-{tag}-{k}", task_queue=OUR_Q,
                                                  result_type=CaseResult)

        async def start_recorded(tag: str) -> WorkflowHandle[Any, CaseResult]:
            return await start_ours(tag, simulate=False)

        plan: dict[str, Any] = {}

        async def start_bare(tag: str) -> WorkflowHandle[Any, Any]:
            nonlocal seq
            seq += 1
            return await st.bare_client.start_workflow(BareLifecycleWorkflow.run, plan,
                                                       id=f"sim-{tag}-{seq}", task_queue=BARE_Q)

        async def unlocked(awaitable: Awaitable[T]) -> T:
            await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            try:
                return await awaitable
            finally:
                await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())

        async def sequential(side: str, start: Start, n: int) -> None:
            times, results = [], []
            c0, s0 = s.cpu_seconds("process"), s.cpu_seconds("server")
            for _ in range(n):
                t = time.perf_counter()
                with env.auto_time_skipping_disabled():
                    h = await start(side)
                    results.append(await asyncio.wait_for(unlocked(h.result()), args.timeout))
                times.append(time.perf_counter() - t)
            res[side]["seq"] = times
            res[side]["seq_cpu"] = (s.cpu_seconds("process") - c0) / n
            res[side]["seq_server_cpu"] = (s.cpu_seconds("server") - s0) / n
            res[side]["seq_results"] = results

        async def concurrent(side: str, start: Start) -> None:
            c0, s0 = s.cpu_seconds("process"), s.cpu_seconds("server")
            t = time.perf_counter()
            with env.auto_time_skipping_disabled():
                handles = await asyncio.gather(*(start(side + "c") for _ in range(args.concurrent)))
                results = await asyncio.wait_for(
                    unlocked(asyncio.gather(*(h.result() for h in handles))), args.timeout)
            dt = time.perf_counter() - t
            res[side]["conc_s"] = dt
            res[side]["conc_cpu"] = (s.cpu_seconds("process") - c0) / args.concurrent
            res[side]["conc_server_cpu"] = (s.cpu_seconds("server") - s0) / args.concurrent
            res[side]["conc_results"] = results

        with Sampler() as s:
            s.add("process", os.getpid())
            s.add("server", st.server_ps.pid)
            runner = UnsandboxedWorkflowRunner() if args.unsandboxed else None
            # Sandboxed unless --unsandboxed: Worker's own default, spelled out.
            bare_runner = runner or SandboxedWorkflowRunner()
            async with running_worker(st.client, st.pool, providers, task_queue=OUR_Q,
                                      workflow_runner=runner), \
                    Worker(st.bare_client, task_queue=BARE_Q, workflows=[BareLifecycleWorkflow],
                           activities=[noop], workflow_runner=bare_runner):
                # One warm-up lifecycle (imports, sandbox, first connections), and the shape to
                # replay.
                with env.auto_time_skipping_disabled():
                    h = await start_ours("warm")
                    first = await asyncio.wait_for(unlocked(h.result()), args.timeout)
                shape = await history_shape(h)
                plan.update({"before": shape.before_signal, "wait_signal": False,
                             "after": shape.after_signal})
                report.extra["ours_history"] = shape.as_json()
                if first.state != CaseState.WRITTEN_OFF:
                    report.notes.append(
                        f"WARNING: the warm-up lifecycle ended {first.state}, not written off")
                log(f"ours: {shape.activities} activities, {shape.local_activities} local, "
                    f"{shape.timers} timers per lifecycle; {args.n} sequential")
                await sequential("ours", start_ours, args.n)
                log(f"ours: {args.concurrent} concurrent")
                await concurrent("ours", start_ours)
                with env.auto_time_skipping_disabled():
                    await asyncio.wait_for(unlocked((await start_bare("warm")).result()),
                                           args.timeout)
                log(f"bare: {args.n} sequential")
                await sequential("bare", start_bare, args.n)
                log(f"bare: {args.concurrent} concurrent")
                await concurrent("bare", start_bare)
                # The floor: the same timers, no activities at all.
                plan["before"] = [op for op in plan["before"] if op[0] == "timer"]
                plan["after"] = [op for op in plan["after"] if op[0] == "timer"]
                floor = []
                for _ in range(min(args.n, 5)):
                    t = time.perf_counter()
                    with env.auto_time_skipping_disabled():
                        h = await start_bare("floor")
                        await asyncio.wait_for(unlocked(h.result()), args.timeout)
                    floor.append(time.perf_counter() - t)
                if args.recorded:
                    # A real case, for what simulation mode saves: its warm-up gives the shape.
                    with env.auto_time_skipping_disabled():
                        h = await start_recorded("recwarm")
                        await asyncio.wait_for(unlocked(h.result()), args.timeout)
                    rec_shape = await history_shape(h)
                    plan.update({"before": rec_shape.before_signal,
                                 "after": rec_shape.after_signal})
                    log(f"recorded: {rec_shape.activities} activities, "
                        f"{rec_shape.local_activities} local, {rec_shape.timers} timers per "
                        f"lifecycle; {args.recorded} sequential, ours then bare")
                    await sequential("ours_recorded", start_recorded, args.recorded)
                    with env.auto_time_skipping_disabled():
                        await asyncio.wait_for(unlocked((await start_bare("warm")).result()),
                                               args.timeout)
                    await sequential("bare_recorded", start_bare, args.recorded)
    o, b = res["ours"], res["bare"]
    written_off = sum(1 for r in o["seq_results"] + o["conc_results"]
                      if r.state == CaseState.WRITTEN_OFF)
    so, sb = ms_summary(o["seq"]), ms_summary(b["seq"])
    mean_o, mean_b = 1000 * statistics.mean(o["seq"]), 1000 * statistics.mean(b["seq"])
    report.add("sequential ms per lifecycle p50", so["p50"], sb["p50"], "ms",
               target=f"< {TARGET_MS} ms", met=(so["p50"] or 1e9) < TARGET_MS)
    report.add("sequential ms per lifecycle mean", round(mean_o, 1), round(mean_b, 1), "ms")
    report.add("sequential ms per lifecycle p99", so["p99"], sb["p99"], "ms")
    report.add("same timers, no activities (floor)", None,
               round(1000 * statistics.mean(floor), 1), "ms")
    report.add("sequential lifecycles/s", round(1000 / mean_o, 2), round(1000 / mean_b, 2), "/s")
    conc_o, conc_b = args.concurrent / o["conc_s"], args.concurrent / b["conc_s"]
    report.add("concurrent lifecycles/s", round(conc_o, 2), round(conc_b, 2), "/s")
    report.add("concurrent ms per lifecycle", round(1000 / conc_o, 1), round(1000 / conc_b, 1),
               "ms", target=f"< {TARGET_MS} ms", met=1000 / conc_o < TARGET_MS)
    report.add("client+worker CPU per lifecycle (seq)", round(1000 * o["seq_cpu"], 1),
               round(1000 * b["seq_cpu"], 1), "ms")
    report.add("test server CPU per lifecycle (seq)", round(1000 * o["seq_server_cpu"], 1),
               round(1000 * b["seq_server_cpu"], 1), "ms")
    report.add("client+worker CPU per lifecycle (conc)", round(1000 * o["conc_cpu"], 1),
               round(1000 * b["conc_cpu"], 1), "ms")
    report.add("activities per lifecycle", shape.activities, shape.activities)
    report.add("local activities per lifecycle", shape.local_activities, shape.local_activities)
    report.add("timers per lifecycle", shape.timers, shape.timers)
    if args.recorded:
        ro, rb = res["ours_recorded"], res["bare_recorded"]
        report.add("recorded case (SMS, e-mail, PostgreSQL): ms per lifecycle mean",
                   round(1000 * statistics.mean(ro["seq"]), 1),
                   round(1000 * statistics.mean(rb["seq"]), 1), "ms")
        report.add("recorded case: activities per lifecycle", rec_shape.activities,
                   rec_shape.activities)
        report.add("recorded case: client+worker CPU per lifecycle", round(1000 * ro["seq_cpu"], 1),
                   round(1000 * rb["seq_cpu"], 1), "ms")
        written_off_rec = sum(1 for r in ro["seq_results"] if r.state == CaseState.WRITTEN_OFF)
        report.notes.append(
            f"recorded: {written_off_rec}/{args.recorded} lifecycles ended written off; "
            f"activities {rec_shape.activity_types}")
    report.notes.append(
        f"ours: {written_off}/{args.n + args.concurrent} lifecycles ended written off; "
        f"history {shape.events} events / {shape.history_bytes / 1024:.1f} KiB, "
        f"activities {shape.activity_types}")
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 5)
    p.add_argument("--concurrent", type=int, default=10, help="lifecycles at once (default 10)")
    p.add_argument("--recorded", type=int, default=3,
                   help="lifecycles of a real, recorded case (default 3; 0: none)")
    p.add_argument("--unsandboxed", action="store_true",
                   help="both workers without the workflow sandbox")
    p.add_argument("--timeout", type=float, default=600, help="bound on any one wait (s)")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
