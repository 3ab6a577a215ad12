"""Simulation: whole default-ladder lifecycles (to write-off at D+180) on the time-skipping server.

Ours: CollectionWorkflow with the default policy (resolved by its activity), activities against
PostgreSQL and the emulator, our worker in this process. Bare: BareLifecycleWorkflow replaying the
shape of our first lifecycle's history (same timers and durations, same number of no-op
activities), its worker in this process too, on the same server. Each side runs `--n` lifecycles
one after another (start, unlock time skipping, await the result, lock), then `--concurrent` at
once with the unlock-once pattern of temporal-notes.md (start all; unlock; gather; lock).

Figures: ms per lifecycle (sequential, p50 and mean), lifecycles/s (concurrent), CPU seconds of
this process (client and worker) and of the test server per lifecycle.

    python -m bench.simulation --n 20 --concurrent 100
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import timedelta

from bench.bare import BareLifecycleWorkflow, noop
from bench.common import (
    LOCAL_TZ, TWILIO_SID, Report, Sampler, Stack, base_parser, history_shape, load_now, log,
    make_loan, ms_summary, run,
)

TARGET_MS = 100
OUR_Q, BARE_Q = "sim-collections", "sim-bare"


async def _today(env):
    from zoneinfo import ZoneInfo

    return (await env.get_current_time()).astimezone(ZoneInfo(LOCAL_TZ)).date()


async def main(args) -> Report:
    from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
    from temporalio.worker import Worker

    from worker import Providers, running_worker
    from workflows.collection_workflow import CollectionInput, CollectionWorkflow
    from workflows.messages import CaseState

    report = Report("simulation", params={"n_sequential": args.n, "n_concurrent": args.concurrent,
                                          "policy": "default (standard ladder, write-off at D+180)"})
    report.load_before = load_now()
    res: dict[str, dict] = {"ours": {}, "bare": {}}
    async with Stack(server="test") as st:
        env = st.env
        providers = Providers(twilio_sid=TWILIO_SID, twilio_token="bench-token", twilio_base_url=st.emulator.url,
                              twilio_from="+15005550006", sendgrid_key="SG.bench-key",
                              sendgrid_base_url=st.emulator.url, sendgrid_from="collections@lender.example",
                              http_timeout_seconds=5)
        seq = 0

        async def start_ours(tag: str):
            nonlocal seq
            seq += 1
            k = seq
            loan = make_loan(f"SIM{tag}{k:05d}", await _today(env) + timedelta(days=5), k)
            return await st.client.start_workflow(CollectionWorkflow.run, CollectionInput(loan=loan),
                                                  id=f"sim-{tag}-{k}", task_queue=OUR_Q)

        plan: dict = {}

        async def start_bare(tag: str):
            nonlocal seq
            seq += 1
            return await st.bare_client.start_workflow(BareLifecycleWorkflow.run, plan,
                                                       id=f"sim-{tag}-{seq}", task_queue=BARE_Q)

        async def unlocked(awaitable):
            await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
            try:
                return await awaitable
            finally:
                await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())

        async def sequential(side: str, start) -> None:
            times, results = [], []
            c0, s0 = s.cpu("process"), s.cpu("server")
            for _ in range(args.n):
                t = time.perf_counter()
                with env.auto_time_skipping_disabled():
                    h = await start(side)
                    results.append(await asyncio.wait_for(unlocked(h.result()), args.timeout))
                times.append(time.perf_counter() - t)
            res[side]["seq"] = times
            res[side]["seq_cpu"] = (s.cpu("process") - c0) / args.n
            res[side]["seq_server_cpu"] = (s.cpu("server") - s0) / args.n
            res[side]["seq_results"] = results

        async def concurrent(side: str, start) -> None:
            c0, s0 = s.cpu("process"), s.cpu("server")
            t = time.perf_counter()
            with env.auto_time_skipping_disabled():
                handles = await asyncio.gather(*(start(side + "c") for _ in range(args.concurrent)))
                results = await asyncio.wait_for(
                    unlocked(asyncio.gather(*(h.result() for h in handles))), args.timeout)
            dt = time.perf_counter() - t
            res[side]["conc_s"] = dt
            res[side]["conc_cpu"] = (s.cpu("process") - c0) / args.concurrent
            res[side]["conc_server_cpu"] = (s.cpu("server") - s0) / args.concurrent
            res[side]["conc_results"] = results

        with Sampler() as s:
            s.add("process", os.getpid())
            s.add("server", st.server_ps.pid)
            async with running_worker(st.client, st.pool, providers, task_queue=OUR_Q), \
                    Worker(st.bare_client, task_queue=BARE_Q, workflows=[BareLifecycleWorkflow], activities=[noop]):
                # One warm-up lifecycle (imports, sandbox, first connections), and the shape to replay.
                with env.auto_time_skipping_disabled():
                    h = await start_ours("warm")
                    first = await asyncio.wait_for(unlocked(h.result()), args.timeout)
                shape = await history_shape(h)
                plan.update({"before": shape.before_signal, "wait_signal": False, "after": shape.after_signal})
                report.extra["ours_history"] = shape.as_json()
                if first.state != CaseState.WRITTEN_OFF:
                    report.notes.append(f"WARNING: the warm-up lifecycle ended {first.state}, not written off")
                log(f"ours: {shape.activities} activities, {shape.local_activities} local, {shape.timers} timers per lifecycle; "
                    f"{args.n} sequential")
                await sequential("ours", start_ours)
                log(f"ours: {args.concurrent} concurrent")
                await concurrent("ours", start_ours)
                with env.auto_time_skipping_disabled():
                    await asyncio.wait_for(unlocked((await start_bare("warm")).result()), args.timeout)
                log(f"bare: {args.n} sequential")
                await sequential("bare", start_bare)
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
    o, b = res["ours"], res["bare"]
    written_off = sum(1 for r in o["seq_results"] + o["conc_results"] if r.state == CaseState.WRITTEN_OFF)
    so, sb = ms_summary(o["seq"]), ms_summary(b["seq"])
    mean_o, mean_b = 1000 * statistics.mean(o["seq"]), 1000 * statistics.mean(b["seq"])
    report.add("sequential ms per lifecycle p50", so["p50"], sb["p50"], "ms",
               target=f"< {TARGET_MS} ms", met=(so["p50"] or 1e9) < TARGET_MS)
    report.add("sequential ms per lifecycle mean", round(mean_o, 1), round(mean_b, 1), "ms")
    report.add("sequential ms per lifecycle p99", so["p99"], sb["p99"], "ms")
    report.add("same timers, no activities (floor)", None, round(1000 * statistics.mean(floor), 1), "ms")
    report.add("sequential lifecycles/s", round(1000 / mean_o, 2), round(1000 / mean_b, 2), "/s")
    conc_o, conc_b = args.concurrent / o["conc_s"], args.concurrent / b["conc_s"]
    report.add("concurrent lifecycles/s", round(conc_o, 2), round(conc_b, 2), "/s")
    report.add("concurrent ms per lifecycle", round(1000 / conc_o, 1), round(1000 / conc_b, 1), "ms",
               target=f"< {TARGET_MS} ms", met=1000 / conc_o < TARGET_MS)
    report.add("client+worker CPU per lifecycle (seq)", round(1000 * o["seq_cpu"], 1), round(1000 * b["seq_cpu"], 1), "ms")
    report.add("test server CPU per lifecycle (seq)", round(1000 * o["seq_server_cpu"], 1),
               round(1000 * b["seq_server_cpu"], 1), "ms")
    report.add("client+worker CPU per lifecycle (conc)", round(1000 * o["conc_cpu"], 1), round(1000 * b["conc_cpu"], 1), "ms")
    report.add("activities per lifecycle", shape.activities, shape.activities)
    report.add("local activities per lifecycle", shape.local_activities, shape.local_activities)
    report.add("timers per lifecycle", shape.timers, shape.timers)
    report.notes.append(f"ours: {written_off}/{args.n + args.concurrent} lifecycles ended written off; "
                        f"history {shape.events} events / {shape.history_bytes / 1024:.1f} KiB, "
                        f"activities {shape.activity_types}")
    return report


def parser():
    p = base_parser(__doc__.splitlines()[0], 5)
    p.add_argument("--concurrent", type=int, default=10, help="lifecycles at once (default 10)")
    p.add_argument("--timeout", type=float, default=600, help="bound on any one wait (s)")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
