"""Lifecycle: N loans through a compressed ladder to a payment, against a bare replica.

Ours: CollectionWorkflow with a pinned policy: `--day-seconds` (default 5) real seconds per policy
day, a ladder of 3 message steps a day apart (SMS; e-mail; SMS and e-mail) through the emulator, a
24-hour contact window (so that lag under load cannot push a contact to the next day and change
the amount of work), every decision recorded in PostgreSQL. When a loan's last ladder e-mail
has reached the emulator, the benchmark pays the loan in full (`operations.pay`): the case sends
its receipts, records and closes.
Bare: BareLifecycleWorkflow replaying the shape of the fullest of 5 of our cases: the same timers
(same durations), the same number of activities (no-ops), the payment signal at the same point.

Figures: cases/s (first start to last close), worker and server CPU seconds per case, peak RSS of
worker and server. Each side has a fresh dev server (SQLite file) and its worker in a subprocess.
`--profile` also profiles our worker (bench/profiler.py: cProfile in every thread) and prints
where its time goes.

    python -m bench.lifecycle --n 500
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from temporalio.client import Client

from bench.bare import BareLifecycleWorkflow
from bench.common import BARE_QUEUE, LOCAL_TZ, OUR_QUEUE, base_parser, log, make_loan
from bench.measure import HistoryShape, Sampler, file_size, history_shape, mib
from bench.report import Report, load_now, run
from bench.stack import Stack

if TYPE_CHECKING:
    from contracts.messages import LoanInput
    from contracts.policy import Step

TARGET = 0.7
LAST_STEP = "bench-both"


def ladder(now_local: datetime) -> list[Step]:
    """Three message steps a policy day apart, the first two policy hours from now."""
    from contracts.messages import Stage
    from contracts.policy import Step

    first = now_local + timedelta(hours=2)
    day0 = (first.date() - now_local.date()).days
    hour = first.hour
    spec = [("bench-sms", ["sms"], "early_reminder"), ("bench-email", ["email"], "early_reminder"),
            (LAST_STEP, ["sms", "email"], "firm_reminder")]
    return [Step(id=sid, day=day0 + k, hour=hour, stage=Stage.EARLY, kind="message", channels=ch,
                 template=tpl) for k, (sid, ch, tpl) in enumerate(spec)]


async def run_ours(args: argparse.Namespace,
                   report: Report) -> tuple[dict[str, Any], HistoryShape]:
    from bench.common import pinned_policy
    from contracts.case_io import CollectionInput
    from contracts.messages import CaseResult, PaymentInput
    from contracts.names import WORKFLOW_TYPE, workflow_id_for
    from contracts.names import loan_id_from as loan_from_wf
    from service.cases import pay

    n = args.n
    now_local = datetime.now(ZoneInfo(LOCAL_TZ))
    due = now_local.date()
    steps = ladder(now_local)
    loans = [make_loan(f"LC{i:06d}", due, i) for i in range(n)]
    policy = pinned_policy(loans[0], day_seconds=args.day_seconds, steps=steps, open_window=True)
    async with Stack(pool_size=4) as st:
        prof_out = st.dir / "worker-profile.txt"
        with Sampler() as s:
            worker = await st.start_our_worker(max_cached=max(1000, n),
                                               profile_out=prof_out if args.profile else None,
                                               profile_mode=args.profile or "cprofile")
            w0, s0, t0 = await _measure_from(s, worker.pid, st.server_ps.pid)
            paid: set[str] = set()
            pay_tasks: set[asyncio.Task[None]] = set()
            seen = 0
            errors: list[str] = []

            async def pay_one(loan_id: str) -> None:
                try:
                    await pay(st.client, loan_id, PaymentInput(
                        payment_id=f"{loan_id}-full", amount=Decimal("1200.00"), currency="CNY"))
                except Exception as err:  # reported below
                    errors.append(f"{loan_id}: {err}")

            def poll_emulator() -> None:
                # The last step's e-mail (sent after its SMS) marks the end of the ladder, whatever
                # the steps before it did (a step overtaken by a later one under load is skipped).
                nonlocal seen
                msgs = st.emulator.messages(channel="email")
                for m in msgs[seen:]:
                    key = m["custom_args"].get("outbox_key", "")
                    if not key.endswith(f"/{LAST_STEP}/email"):
                        continue
                    loan_id = loan_from_wf(key.split("/", 1)[0])
                    if loan_id in paid:
                        continue
                    paid.add(loan_id)
                    task = asyncio.create_task(pay_one(loan_id))
                    pay_tasks.add(task)
                    task.add_done_callback(pay_tasks.discard)
                seen = len(msgs)

            async def start_all() -> None:
                sem = asyncio.Semaphore(50)

                async def one(loan: LoanInput) -> None:
                    async with sem:
                        # By type name: the run method takes the workflow's CaseInput (which adds
                        # the state carried through continue-as-new); a caller sends this.
                        await st.client.start_workflow(
                            WORKFLOW_TYPE, CollectionInput(loan=loan, policy=policy),
                            id=workflow_id_for(loan.loan_id), task_queue=OUR_QUEUE,
                            result_type=CaseResult)
                await asyncio.gather(*(one(loan) for loan in loans))

            starter = asyncio.create_task(start_all())
            await _wait_closed(st.client, "CollectionWorkflow", n, starter, args.timeout,
                               may_be_done=lambda: len(paid) == n and not pay_tasks,
                               progress=lambda done: f"  ours: {len(paid)}/{n} paid, "
                                                     f"{done}/{n} closed",
                               tick=poll_emulator)
            elapsed = time.perf_counter() - t0
            await starter
            cpu_w, cpu_s = s.cpu_seconds("worker") - w0, s.cpu_seconds("server") - s0
            peak_w, peak_s = s.peak("worker"), s.peak("server")
            done = await _count_closed(st.client, "CollectionWorkflow")
            completed = await _count(
                st.client, "WorkflowType='CollectionWorkflow' AND ExecutionStatus='Completed'")
            if done < n:
                report.notes.append(
                    f"WARNING ours: only {done}/{n} cases closed within {args.timeout}s")
            # The bare replica follows the fullest of a few cases (a case whose step was overtaken
            # by the next one under load does less work): the comparison errs against us.
            shapes = [
                await history_shape(
                    st.client.get_workflow_handle(workflow_id_for(loans[i].loan_id)))
                for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})]
            shape = max(shapes, key=lambda x: (x.activities, x.timers))
            async with st.pool.acquire() as conn:
                deferred = await conn.fetchval(
                    "SELECT count(*) FROM contacts WHERE decision = 'deferred'")
                skipped = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE kind = 'step_skipped'")
                paid_rows = await conn.fetchval(
                    "SELECT count(*) FROM cases WHERE state = 'paid'")
            db = file_size(st.sqlite_file)
            await st.stop_proc(worker)
            profile = prof_out.read_text() if args.profile and prof_out.exists() else None
    msgs_total = len(st.emulator.messages())  # stopped by now; what it received stays readable
    acts = sorted({x.activities for x in shapes})
    report.extra["ours_history"] = shape.as_json()
    report.notes.append(
        f"ours: {completed}/{n} completed, {paid_rows} paid in PostgreSQL, {msgs_total} messages, "
        f"{deferred} contacts deferred, {skipped} steps skipped (overtaken under load); activities "
        f"per case in a sample {acts} (bare replays the fullest), "
        f"timers {shape.timers}, history {shape.events} events / "
        f"{shape.history_bytes / 1024:.1f} KiB")
    if errors:
        report.notes.append(f"ours: {len(errors)} payment errors, first: {errors[0]}")
    res = {"secs": elapsed, "n": done, "cpu_w": cpu_w, "cpu_s": cpu_s, "peak_w": peak_w,
           "peak_s": peak_s, "db": db, "shape": shape, "profile": profile}
    return res, shape


async def run_bare(args: argparse.Namespace, shape: HistoryShape,
                   report: Report) -> dict[str, Any]:
    n = args.n
    plan = {"before": shape.before_signal, "wait_signal": shape.signals > 0,
            "after": shape.after_signal}
    async with Stack(postgres=False, emulator=False) as st:
        with Sampler() as s:
            worker = await st.start_bare_worker(max_cached=max(1000, n))
            w0, s0, t0 = await _measure_from(s, worker.pid, st.server_ps.pid)
            sem = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with sem:
                    h = await st.bare_client.start_workflow(
                        BareLifecycleWorkflow.run, plan, id=f"bare-lc-{i:06d}",
                        task_queue=BARE_QUEUE)
                # Same RPC count as ours; the workflow acts on it only where ours received it.
                if plan["wait_signal"]:
                    await h.signal(BareLifecycleWorkflow.pay, 1200.0)

            starter = asyncio.ensure_future(asyncio.gather(*(one(i) for i in range(n))))
            await _wait_closed(st.bare_client, "BareLifecycleWorkflow", n, starter, args.timeout,
                               may_be_done=starter.done,
                               progress=lambda done: f"  bare: {done}/{n} closed")
            elapsed = time.perf_counter() - t0
            await starter
            cpu_w, cpu_s = s.cpu_seconds("worker") - w0, s.cpu_seconds("server") - s0
            peak_w, peak_s = s.peak("worker"), s.peak("server")
            done = await _count_closed(st.bare_client, "BareLifecycleWorkflow")
            bare_shape = await history_shape(st.bare_client.get_workflow_handle("bare-lc-000000"))
            db = file_size(st.sqlite_file)
    if done < n:
        report.notes.append(f"WARNING bare: only {done}/{n} closed within {args.timeout}s")
    report.extra["bare_history"] = bare_shape.as_json()
    report.notes.append(
        f"bare: activities per case {bare_shape.activities}, timers {bare_shape.timers}, "
        f"history {bare_shape.events} events / {bare_shape.history_bytes / 1024:.1f} KiB")
    return {"secs": elapsed, "n": done, "cpu_w": cpu_w, "cpu_s": cpu_s, "peak_w": peak_w,
            "peak_s": peak_s, "db": db}


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _measure_from(s: Sampler, worker_pid: int, server_pid: int,
                        ) -> tuple[float, float, float]:
    """Sample the worker and the server from a settled start: their CPU seconds so far and the
    perf counter, for what follows."""
    s.add("worker", worker_pid)
    s.add("server", server_pid)
    await asyncio.sleep(1)
    s.reset_peaks()
    return s.cpu_seconds("worker"), s.cpu_seconds("server"), time.perf_counter()


async def _wait_closed(client: Client, wf_type: str, n: int, starter: asyncio.Future[Any],
                       timeout: float, *, may_be_done: Callable[[], bool],  # noqa: ASYNC109
                       progress: Callable[[int], str],
                       tick: Callable[[], None] | None = None) -> None:
    """Until `n` workflows of `wf_type` are closed (counted once `may_be_done()`), or `timeout`
    seconds pass; `tick` runs every 0.2 s, `progress(closed)` is logged every 10 s. A failed
    `starter` is raised."""
    deadline = time.monotonic() + timeout
    last_log = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if tick is not None:
            tick()
        if starter.done() and (err := starter.exception()) is not None:
            raise err
        if may_be_done() and await _count_closed(client, wf_type) >= n:
            return
        if time.monotonic() - last_log > 10:
            log(progress(await _count_closed(client, wf_type)))
            last_log = time.monotonic()


async def _count_closed(client: Client, wf_type: str) -> int:
    return await _count(client, f"WorkflowType='{wf_type}' AND ExecutionStatus!='Running'")


async def main(args: argparse.Namespace) -> Report:
    ladder_desc = "3 message steps (sms; email; sms+email) + full payment"
    report = Report("lifecycle", params={"n": args.n, "day_seconds": args.day_seconds,
                                         "ladder": ladder_desc})
    report.load_before = load_now()
    log(f"ours: {args.n} cases")
    ours, shape = await run_ours(args, report)
    log(f"ours: {ours['n']} closed in {ours['secs']:.1f}s; bare: {args.n} replicas")
    bare = await run_bare(args, shape, report)
    log(f"bare: {bare['n']} closed in {bare['secs']:.1f}s")
    n = args.n
    rate_o, rate_b = ours["n"] / ours["secs"], bare["n"] / bare["secs"]
    report.add("cases/s", round(rate_o, 2), round(rate_b, 2), "/s", target=f"ratio >= {TARGET}",
               met=rate_o / rate_b >= TARGET)
    report.add("wall time", round(ours["secs"], 1), round(bare["secs"], 1), "s")
    report.add("worker CPU per case", round(1000 * ours["cpu_w"] / n, 1),
               round(1000 * bare["cpu_w"] / n, 1), "ms")
    report.add("server CPU per case", round(1000 * ours["cpu_s"] / n, 1),
               round(1000 * bare["cpu_s"] / n, 1), "ms")
    report.add("worker peak RSS", mib(ours["peak_w"]), mib(bare["peak_w"]), "MiB")
    report.add("server peak RSS", mib(ours["peak_s"]), mib(bare["peak_s"]), "MiB")
    report.add("SQLite file", mib(ours["db"]), mib(bare["db"]), "MiB")
    report.add("activities per case", shape.activities, shape.activities)
    report.add("local activities per case", shape.local_activities, shape.local_activities)
    report.add("timers per case", shape.timers, shape.timers)
    if ours.get("profile"):
        print(ours["profile"])
        report.extra["worker_profile_top"] = ours["profile"].splitlines()[:60]
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 30)
    p.add_argument("--day-seconds", type=int, default=5,
                   help="real seconds per policy day (default 5)")
    p.add_argument("--timeout", type=float, default=900,
                   help="give up on a side after this long (s)")
    p.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "sample", "gc"),
                   help="profile our worker (bench/profiler.py; default cprofile, or gc pauses) "
                   "and print it")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
