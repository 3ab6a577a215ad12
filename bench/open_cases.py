"""Open cases: N cases asleep on long timers on one machine, and how fast one of them answers.

Ours: N loans due 60 days from now started through `operations.start_many` with our worker running
(subprocess, max_cached_workflows 1000): each resolves its policy, records the case in PostgreSQL
and sleeps until its first step (D-3). Bare: N BareWorkflows (a 60-day timer), started in batches
of 200, with the bare worker. Each side on a fresh dev server (SQLite file).

Figures: time to start them (client) and until every case has settled (ours: N rows in `cases` and
the worker idle; bare: the worker idle), worker and server RSS once settled, SQLite file size, and,
while they are open, the latency of a `status` query and of a payment signal to random cases, one
at a time: the signal's acknowledgement, and until the payment is visible in `status`
(p50/p99 over --samples). Ours pays 1.00 CNY (the case applies it, sends an SMS acknowledgement
and records it), through `operations.pay` / `operations.status`; bare adds to a counter.

    python -m bench.open_cases --n 10000
    python -m bench.open_cases --n 50000      # the one-machine target
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

from bench.bare import BareWorkflow
from bench.common import OUR_QUEUE, base_parser, local_today, log, make_loan, start_bare
from bench.measure import Sampler, file_size, mib, ms_summary, timed_samples
from bench.memory import measure_sizes, memory_report
from bench.report import Report, load_now, run
from bench.stack import Stack, count

P99_TARGET_MS = 500


async def ours(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    from contracts.messages import PaymentInput
    from service.cases import pay, start_many, status

    n = args.n
    due = local_today() + timedelta(days=60)
    async with Stack() as st:
        with Sampler() as s:
            prof_out = st.dir / "worker-profile.txt"
            worker = await st.start_our_worker(max_cached=args.max_cached,
                                               profile_out=prof_out if args.profile else None,
                                               profile_mode=args.profile or "cprofile")
            s.add("worker", worker.pid)
            s.add("server", st.server_ps.pid)
            ids = [f"OC{i:06d}" for i in range(n)]
            t0 = time.perf_counter()
            counts = await start_many(st.client,
                                      (make_loan(lid, due, i) for i, lid in enumerate(ids)),
                                      task_queue=OUR_QUEUE)
            t_start = time.perf_counter() - t0
            log(f"ours: {counts['started']} started in {t_start:.1f}s; waiting for them to settle")

            async def all_recorded() -> bool:
                return await st.pool.fetchval("SELECT count(*) FROM cases") >= n

            await s.wait_idle("worker", timeout=args.settle_timeout, check=all_recorded)
            t_settled = time.perf_counter() - t0
            recorded = await st.pool.fetchval("SELECT count(*) FROM cases")
            figures: dict[str, Any] = {
                "start_s": t_start, "settled_s": t_settled, "rss_w": s.rss("worker"),
                "peak_w": s.peak("worker"), "rss_s": s.rss("server"), "peak_s": s.peak("server"),
                "db": file_size(st.sqlite_file), "started": counts["started"],
                "recorded": recorded, "cpu_w": s.cpu("worker"), "cpu_s": s.cpu("server")}
            log(f"ours: settled after {t_settled:.1f}s ({recorded} recorded); sampling latencies")
            rng = random.Random(11)
            paid: Counter[str] = Counter()  # payments of 1.00 this benchmark sent, per case

            async def query(_: int) -> None:
                await status(st.client, rng.choice(ids))

            async def signal(i: int) -> None:
                lid = rng.choice(ids)
                await pay(st.client, lid, PaymentInput(
                    payment_id=f"bench-ack-{i}", amount=Decimal("1.00"), currency="CNY"))
                paid[lid] += 1

            visible_fail = 0

            async def pay_visible(i: int) -> None:
                # From the signal until `status` shows it: the workflow task that applies it (after
                # a replay if the case is not cached) and the query.
                nonlocal visible_fail
                lid = rng.choice(ids)
                paid[lid] += 1
                await pay(st.client, lid, PaymentInput(payment_id=f"bench-vis-{i}",
                                                       amount=Decimal("1.00"), currency="CNY"))
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    if (await status(st.client, lid)).paid_total >= paid[lid]:
                        return
                visible_fail += 1

            figures["query"] = await timed_samples(query, args.samples, budget=args.budget)
            figures["signal"] = await timed_samples(signal, args.samples, budget=args.budget)
            figures["visible"] = await timed_samples(pay_visible, args.samples, budget=args.budget)
            figures["visible_fail"] = visible_fail
            figures["peak_w_after"] = s.peak("worker")
            await st.stop_proc(worker)
            s.remove("worker")
            if args.profile and prof_out.exists():
                figures["profile"] = prof_out.read_text()
            if args.memory_sizes:
                figures["memory"] = await measure_sizes(
                    st, s, "ours", ids, args.memory_sizes, samples=args.memory_samples,
                    budget=args.budget, settle_timeout=args.settle_timeout)
    return figures


async def bare(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    n = args.n
    wait = int(timedelta(days=60).total_seconds())
    async with Stack(postgres=False, emulator=False) as st:
        with Sampler() as s:
            worker = await st.start_bare_worker(max_cached=args.max_cached)
            s.add("worker", worker.pid)
            s.add("server", st.server_ps.pid)
            ids = [f"bare-oc-{i:06d}" for i in range(n)]
            t0 = time.perf_counter()
            await start_bare(st.bare_client, ids, wait)
            t_start = time.perf_counter() - t0
            log(f"bare: {n} started in {t_start:.1f}s; waiting for them to settle")
            await s.wait_idle("worker", timeout=args.settle_timeout)
            t_settled = time.perf_counter() - t0
            figures: dict[str, Any] = {
                "start_s": t_start, "settled_s": t_settled, "rss_w": s.rss("worker"),
                "peak_w": s.peak("worker"), "rss_s": s.rss("server"), "peak_s": s.peak("server"),
                "db": file_size(st.sqlite_file),
                "started": await count(st.bare_client, "WorkflowType='BareWorkflow'"),
                "cpu_w": s.cpu("worker"), "cpu_s": s.cpu("server")}
            rng = random.Random(11)
            paid: Counter[str] = Counter()

            async def query(_: int) -> None:
                await st.bare_client.get_workflow_handle(rng.choice(ids)).query(BareWorkflow.status)

            async def signal(_: int) -> None:
                lid = rng.choice(ids)
                await st.bare_client.get_workflow_handle(lid).signal(BareWorkflow.pay, 1.0)
                paid[lid] += 1

            visible_fail = 0

            async def pay_visible(_: int) -> None:
                nonlocal visible_fail
                lid = rng.choice(ids)
                paid[lid] += 1
                h = st.bare_client.get_workflow_handle(lid)
                await h.signal(BareWorkflow.pay, 1.0)
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    if (await h.query(BareWorkflow.status))["payments"] >= paid[lid]:
                        return
                visible_fail += 1

            figures["query"] = await timed_samples(query, args.samples, budget=args.budget)
            figures["signal"] = await timed_samples(signal, args.samples, budget=args.budget)
            figures["visible"] = await timed_samples(pay_visible, args.samples, budget=args.budget)
            figures["visible_fail"] = visible_fail
            await st.stop_proc(worker)
            s.remove("worker")
            if args.memory_sizes:
                figures["memory"] = await measure_sizes(
                    st, s, "bare", ids, args.memory_sizes, samples=args.memory_samples,
                    budget=args.budget, settle_timeout=args.settle_timeout)
    return figures


# --no-bare: every bare figure empty (the ratios come from a run with the bare side).
NO_BARE: dict[str, Any] = {
    "start_s": None, "settled_s": None, "rss_w": None, "peak_w": None, "rss_s": None,
    "peak_s": None, "db": None, "started": None, "cpu_w": None, "query": [], "signal": [],
    "visible": [], "visible_fail": None, "memory": None}


async def main(args: argparse.Namespace) -> Report:
    args.settle_timeout = args.settle_timeout or max(1800.0, 0.3 * args.n)
    args.memory_sizes = (sorted(int(x) for x in args.memory_sizes.split(","))
                         if args.memory_sizes else [])
    if args.memory_sizes and args.no_bare:
        raise SystemExit(
            "--memory-sizes compares with the bare side: drop --no-bare or --memory-sizes")
    if args.memory_sizes and max(args.memory_sizes) > args.n:
        raise SystemExit(f"--memory-sizes up to {max(args.memory_sizes)} need at least that many "
                         "cases (--n)")
    report = Report(args.key, params={"n": args.n, "samples": args.samples,
                                      "max_cached_workflows": args.max_cached,
                                      "bare": not args.no_bare})
    report.load_before = load_now()
    log(f"ours: opening {args.n} cases")
    o = await ours(args, report)
    if args.no_bare:
        b = NO_BARE
    else:
        log(f"bare: opening {args.n} workflows")
        b = await bare(args, report)
    n = args.n

    def rnd(x: float | None, nd: int = 1) -> float | None:
        return None if x is None else round(x, nd)

    def per(x: float | None, scale: float = 1.0, nd: int = 1) -> float | None:
        return None if x is None else round(scale * x / n, nd)

    report.add("open cases", o["recorded"], b["started"], target=f">= {n}",
               met=o["recorded"] >= n and o["started"] == n)
    report.add("time to start (client)", rnd(o["start_s"]), rnd(b["start_s"]), "s")
    report.add("starts/s", rnd(n / o["start_s"]), rnd(b["start_s"] and n / b["start_s"]), "/s")
    report.add("time until settled", rnd(o["settled_s"]), rnd(b["settled_s"]), "s")
    report.add("worker RSS settled", mib(o["rss_w"]), mib(b["rss_w"]), "MiB")
    report.add("worker peak RSS", mib(max(o["peak_w"], o["peak_w_after"])), mib(b["peak_w"]), "MiB")
    report.add("server RSS settled", mib(o["rss_s"]), mib(b["rss_s"]), "MiB")
    report.add("server peak RSS", mib(o["peak_s"]), mib(b["peak_s"]), "MiB")
    report.add("SQLite file", mib(o["db"]), mib(b["db"]), "MiB")
    report.add("SQLite bytes per case", per(o["db"], nd=0), per(b["db"], nd=0), "B")
    report.add("worker CPU to open one", per(o["cpu_w"], 1000), per(b["cpu_w"], 1000), "ms")
    for key, label in (("query", "status query"), ("signal", "payment signal ack"),
                       ("visible", "payment visible in status")):
        so, sb = ms_summary(o[key]), ms_summary(b[key])
        report.add(f"{label} p50", so["p50"], sb["p50"], "ms")
        kw = ({"target": f"< {P99_TARGET_MS} ms", "met": (so["p99"] or 1e9) < P99_TARGET_MS}
              if key == "visible" else {})
        report.add(f"{label} p99", so["p99"], sb["p99"], "ms", **kw)
        report.extra[key] = {"ours": so, "bare": sb}
    report.notes.append(
        f"latency samples: ours {len(o['query'])}/{len(o['signal'])}/{len(o['visible'])}, "
        f"bare {len(b['query'])}/{len(b['signal'])}/{len(b['visible'])} (query/signal/visible); "
        f"not visible within 10 s: ours {o['visible_fail']}, bare {b['visible_fail']}")
    if args.memory_sizes:
        mem = memory_report(o["memory"], b["memory"], args.memory_sizes, n, args.memory_samples)
        mem.load_before = report.load_before
        mem.notes.append(f"measured on the open cases of open_cases --n {n}")
        report.also.append(mem)
    if o.get("profile"):
        print(o["profile"])
        report.extra["worker_profile_top"] = o["profile"].splitlines()[:60]
    if n < 50_000:
        report.notes.append("the one-machine target is 50,000 open cases: run with --n 50000")
    report.notes.append(
        f"a random case of {n} is in the worker's sticky cache with odds about "
        f"{min(1, args.max_cached / n):.0%}: the rest are replayed from history to answer")
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 1000)
    p.add_argument("--samples", type=int, default=200,
                   help="latency samples per figure (default 200)")
    p.add_argument("--budget", type=float, default=120, help="seconds at most per latency figure")
    p.add_argument("--max-cached", type=int, default=1000, help="workers' max_cached_workflows")
    p.add_argument("--settle-timeout", type=float, default=0,
                   help="bound on waiting for the cases to settle (default: 30 min, or 0.3 s per "
                   "case if more)")
    p.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "sample", "gc"),
                   help="profile our worker (bench/profiler.py; default cprofile, or gc pauses) "
                   "and print it")
    p.add_argument("--memory-sizes", default="",
                   help="also run the memory benchmark on these open cases, "
                   "e.g. 100,1000,5000 (written under 'memory')")
    p.add_argument("--memory-samples", type=int, default=100,
                   help="latency samples per memory size")
    p.add_argument("--key", default="open_cases", help="name of the figures in latest.json (e.g. "
                   "open_cases_50k, so that a long run sits beside make bench's)")
    p.add_argument("--no-bare", action="store_true",
                   help="ours only (the one-machine size, where the "
                   "bare side would double a long run)")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
