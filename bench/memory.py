"""Memory: worker RSS with the sticky cache full, per max_cached_workflows, and what it buys.

`--cases` open cases (default: the largest size plus a tenth) are started once through
`start_many` and settle. Then, for each size M of `--sizes`, a fresh worker subprocess with
MAX_CACHED_WORKFLOWS=M starts (RSS with the cache empty), M distinct cases are queried (`status`:
the worker replays each and keeps it in its cache), and RSS is read again once the worker is idle:
RSS per cached case = (full - empty) / M. Then, with the cache full, `--samples` at random over
all cases (a case is cached with odds about M / cases), one at a time: a `status` query, and a
payment signal followed by a query (the query waits for the signal's workflow task, replay
included when the case was not cached; ours pays the same 1.00 payment id each time, so after the
first one it is a no-op). The same for BareWorkflow and the bare worker.

`python -m bench.open_cases --memory-sizes ...` runs the same measurement on its own open cases
(that is what `make bench` does, to open the cases once).

    python -m bench.memory --sizes 100,1000,5000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from bench.bare import BareWorkflow
from bench.common import (
    BARE_QUEUE,
    OUR_QUEUE,
    base_parser,
    chunks,
    gather_bounded,
    local_today,
    log,
    make_loan,
)
from bench.measure import Sampler, mib, ms_summary, timed_samples
from bench.report import Report, load_now, run
from bench.stack import Stack

Probe = Callable[[str], Awaitable[None]]  # one call to the case of this loan id


def probes(st: Stack, which: str) -> tuple[Probe, Probe]:
    """(touch, query) for one side: a payment signal and a `status` query to one case."""
    from contracts.messages import PaymentInput
    from service.cases import pay, status

    if which == "ours":
        payment = PaymentInput(payment_id="bench-touch", amount=Decimal("1.00"), currency="CNY")

        async def touch(lid: str) -> None:
            await pay(st.client, lid, payment)

        async def query(lid: str) -> None:
            await status(st.client, lid)
    else:
        async def touch(lid: str) -> None:
            await st.bare_client.get_workflow_handle(lid).signal(BareWorkflow.pay, 0.0)

        async def query(lid: str) -> None:
            await st.bare_client.get_workflow_handle(lid).query(BareWorkflow.status)
    return touch, query


# Filling replays every case from its history: a few at a time, so that the worker's replays do not
# queue behind each other past the queries' timeout (20 at a time timed out at M=5,000).
FILL_CONCURRENCY = 6


async def fill_one(query: Probe, lid: str, attempts: int = 3) -> bool:
    """Query one case until it answers (it is then in the worker's cache); False if it never did."""
    for _ in range(attempts):
        try:
            await query(lid)
            return True
        except Exception as err:  # a query timeout under load: try again
            last = err
    log(f"fill: {lid} did not answer: {type(last).__name__}: {last}")
    return False


async def sample_latencies(touch: Probe, query: Probe, ids: list[str], seed: int, *, samples: int,
                           budget: float) -> tuple[list[float], list[float]]:
    """Latencies of a `status` query, then of a payment signal and query, to random cases."""
    rng = random.Random(seed)

    async def q(_: int) -> None:
        await query(rng.choice(ids))

    async def sq(_: int) -> None:
        lid = rng.choice(ids)
        await touch(lid)
        await query(lid)

    lat_q = await timed_samples(q, samples, budget=budget)
    lat_sq = await timed_samples(sq, samples, budget=budget)
    return lat_q, lat_sq


async def measure_sizes(st: Stack, s: Sampler, which: str, ids: list[str], sizes: list[int], *,
                        samples: int, budget: float,
                        settle_timeout: float) -> dict[int, dict[str, Any]]:
    """For each size: a fresh worker, fill its cache with queries, RSS, then latencies."""
    touch, query = probes(st, which)
    start = st.start_our_worker if which == "ours" else st.start_bare_worker
    out: dict[int, dict[str, Any]] = {}
    for m in sizes:
        worker = await start(max_cached=m, name=f"worker-{which}-{m}")
        s.add("worker", worker.pid)
        try:
            await asyncio.sleep(2)
            empty = s.rss("worker")
            fill = random.Random(m).sample(ids, min(m, len(ids)))
            t = time.perf_counter()
            filled = await gather_bounded((fill_one(query, lid) for lid in fill), FILL_CONCURRENCY)
            fill_s = time.perf_counter() - t
            failed = filled.count(False)
            if failed:
                log(f"{which} M={m}: {failed} of {len(fill)} cases did not answer while filling "
                    "the cache")
            await s.wait_idle("worker", timeout=settle_timeout)
            full = s.rss("worker")
            assert empty is not None and full is not None  # sampled since `s.add` above
            lat_q, lat_sq = await sample_latencies(touch, query, ids, 1000 + m, samples=samples,
                                                   budget=budget)
            out[m] = {"empty": empty, "full": full, "peak": s.peak("worker"), "fill_s": fill_s,
                      "fill_failed": failed,
                      "filled": len(fill), "cases": len(ids), "query": ms_summary(lat_q),
                      "signal_query": ms_summary(lat_sq)}
            log(f"{which} M={m}: RSS {mib(empty)} -> {mib(full)} MiB, "
                f"{(full - empty) / max(1, len(fill)) / 1024:.0f} KiB per cached case; query p50 "
                f"{out[m]['query']['p50']} ms, signal+query p50 {out[m]['signal_query']['p50']} ms")
        finally:
            await st.stop_proc(worker)
            s.remove("worker")
    return out


def memory_report(o: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], sizes: list[int],
                  cases: int, samples: int) -> Report:
    report = Report("memory", params={"sizes": sizes, "cases": cases, "samples": samples})
    for m in sizes:
        om, bm = o[m], b[m]
        per = [(x["full"] - x["empty"]) / max(1, x["filled"]) / 1024 for x in (om, bm)]
        report.add(f"M={m}: worker RSS cache empty", mib(om["empty"]), mib(bm["empty"]), "MiB")
        report.add(f"M={m}: worker RSS cache full", mib(om["full"]), mib(bm["full"]), "MiB")
        report.add(f"M={m}: RSS per cached case", round(per[0], 1), round(per[1], 1), "KiB")
        report.add(f"M={m}: fill (replay) per case", round(1000 * om["fill_s"] / om["filled"], 1),
                   round(1000 * bm["fill_s"] / bm["filled"], 1), "ms")
        for key, label in (("query", "query"), ("signal_query", "signal+query")):
            report.add(f"M={m}: {label} p50", om[key]["p50"], bm[key]["p50"], "ms")
            report.add(f"M={m}: {label} p99", om[key]["p99"], bm[key]["p99"], "ms")
    report.extra = {"ours": o, "bare": b}
    failed = {m: (o[m].get("fill_failed", 0), b[m].get("fill_failed", 0)) for m in sizes}
    if any(x or y for x, y in failed.values()):
        report.notes.append("cases that did not answer while filling (ours, bare): "
                            + ", ".join(f"M={m}: {x}, {y}" for m, (x, y) in failed.items()))
    report.notes.append(f"{cases} open cases per side; a random case is cached with odds about "
                        + ", ".join(f"{min(1, m / cases):.0%} (M={m})" for m in sizes))
    return report


async def open_side(args: argparse.Namespace, which: str) -> dict[int, dict[str, Any]]:
    from service.cases import start_many

    k = args.cases
    async with Stack(postgres=which == "ours", emulator=which == "ours", pool_size=4) as st:
        with Sampler() as s:
            start = st.start_our_worker if which == "ours" else st.start_bare_worker
            worker = await start(max_cached=max(args.sizes))
            s.add("worker", worker.pid)
            t0 = time.perf_counter()
            check: Callable[[], Awaitable[bool]] | None = None  # bare: the worker idle is enough
            if which == "ours":
                ids = [f"MEM{i:06d}" for i in range(k)]
                due = local_today() + timedelta(days=60)
                await start_many(st.client, (make_loan(lid, due, i) for i, lid in enumerate(ids)),
                                 task_queue=OUR_QUEUE)

                async def recorded() -> bool:
                    return await st.pool.fetchval("SELECT count(*) FROM cases") >= k

                check = recorded
            else:
                ids = [f"bare-mem-{i:06d}" for i in range(k)]
                wait = int(timedelta(days=60).total_seconds())
                for batch in chunks(ids, 200):
                    await asyncio.gather(*(st.bare_client.start_workflow(
                        BareWorkflow.run, wait, id=w, task_queue=BARE_QUEUE) for w in batch))
            await s.wait_idle("worker", timeout=args.settle_timeout, check=check)
            log(f"{which}: {k} cases open and settled after {time.perf_counter() - t0:.1f}s")
            await st.stop_proc(worker)
            s.remove("worker")
            return await measure_sizes(st, s, which, ids, args.sizes, samples=args.samples,
                                       budget=args.budget, settle_timeout=args.settle_timeout)


async def main(args: argparse.Namespace) -> Report:
    args.sizes = sorted(int(x) for x in args.sizes.split(","))
    args.cases = args.cases or max(args.sizes) + max(args.sizes) // 10
    load = load_now()
    o = await open_side(args, "ours")
    b = await open_side(args, "bare")
    report = memory_report(o, b, args.sizes, args.cases, args.samples)
    report.load_before = load
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 0)
    p.add_argument("--sizes", default="50,200", help="max_cached_workflows values (default 50,200)")
    p.add_argument("--cases", type=int, default=0, help="open cases (default: largest size + 10%%)")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--budget", type=float, default=90, help="seconds at most per latency figure")
    p.add_argument("--settle-timeout", type=float, default=1800)
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
