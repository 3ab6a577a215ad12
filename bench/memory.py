"""Memory: worker RSS with the sticky cache full, per max_cached_workflows, and what it buys.

`--cases` open cases (default: the largest size plus a tenth) are started once through
`start_many` and settle. Then, for each size M of `--sizes`, a fresh worker subprocess with
MAX_CACHED_WORKFLOWS=M starts (RSS empty), M distinct cases are signalled (a payment id they have
already applied: a no-op that still runs a workflow task, so the case is replayed and cached), and
RSS is read again once the worker is idle: RSS per cached case = (full - empty) / M. Then, with
the cache full, `--samples` at random over all cases (hit odds about M / cases), one at a time:
a `status` query, and a signal followed by a query (the query waits for the signal's workflow
task: replay included when the case was not cached). The same for BareWorkflow and the bare worker.

    python -m bench.memory --sizes 100,1000,5000
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from decimal import Decimal

from bench.bare import BareWorkflow
from bench.common import (
    BARE_QUEUE, OUR_QUEUE, Report, Sampler, Stack, base_parser, chunks, gather_bounded, load_now,
    local_today, log, mib, ms_summary, run, timed_samples, make_loan,
)


async def side(args, which: str, report: Report) -> dict[int, dict]:
    from client.operations import pay, start_many, status
    from workflows.messages import PaymentInput
    from workflows.shared import workflow_id_for

    k = args.cases
    sizes = args.sizes
    ours = which == "ours"
    out: dict[int, dict] = {}
    async with Stack(postgres=ours, emulator=ours, pool_size=4) as st:
        with Sampler() as s:
            client = st.client if ours else st.bare_client
            start = st.start_our_worker if ours else st.start_bare_worker
            worker = await start(max_cached=max(sizes))
            s.add("worker", worker.pid)
            t0 = time.perf_counter()
            if ours:
                ids = [f"MEM{i:06d}" for i in range(k)]
                due = local_today() + timedelta(days=60)
                await start_many(client, (make_loan(lid, due, i) for i, lid in enumerate(ids)), task_queue=OUR_QUEUE)
                fill_payment = PaymentInput(payment_id="bench-fill", amount=Decimal("1.00"), currency="CNY")

                async def touch(lid: str) -> None:
                    await pay(client, lid, fill_payment)

                async def query(lid: str) -> None:
                    await status(client, lid)
            else:
                ids = [f"bare-mem-{i:06d}" for i in range(k)]
                wait = int(timedelta(days=60).total_seconds())
                for batch in chunks(ids, 200):
                    await asyncio.gather(*(client.start_workflow(BareWorkflow.run, wait, id=w, task_queue=BARE_QUEUE)
                                           for w in batch))

                async def touch(lid: str) -> None:
                    await client.get_workflow_handle(lid).signal(BareWorkflow.pay, 0.0)

                async def query(lid: str) -> None:
                    await client.get_workflow_handle(lid).query(BareWorkflow.status)

            # Every case applies the fill payment once now; later fills are no-op duplicates.
            await gather_bounded((touch(lid) for lid in ids), 50)
            await s.wait_idle("worker", timeout=args.settle_timeout)
            log(f"{which}: {k} cases open and settled after {time.perf_counter() - t0:.1f}s")
            await st.stop_proc(worker)
            s.remove("worker")
            for m in sizes:
                worker = await start(max_cached=m, name=f"worker-{m}")
                s.add("worker", worker.pid)
                await asyncio.sleep(2)
                empty = s.rss("worker")
                fill = random.Random(m).sample(ids, min(m, k))
                t = time.perf_counter()
                await gather_bounded((touch(lid) for lid in fill), 20)
                await s.wait_idle("worker", timeout=args.settle_timeout)
                fill_s = time.perf_counter() - t
                full = s.rss("worker")
                rng = random.Random(1000 + m)

                async def q(_: int) -> None:
                    await query(rng.choice(ids))

                async def sq(_: int) -> None:
                    lid = rng.choice(ids)
                    await touch(lid)
                    await query(lid)

                lat_q = await timed_samples(q, args.samples, budget=args.budget)
                lat_sq = await timed_samples(sq, args.samples, budget=args.budget)
                peak = s.peak("worker")
                out[m] = {"empty": empty, "full": full, "peak": peak, "fill_s": fill_s, "filled": len(fill),
                          "query": ms_summary(lat_q), "signal_query": ms_summary(lat_sq)}
                log(f"{which} M={m}: RSS {mib(empty)} -> {mib(full)} MiB, "
                    f"{(full - empty) / max(1, len(fill)) / 1024:.1f} KiB per case; "
                    f"query p50 {out[m]['query']['p50']} ms, signal+query p50 {out[m]['signal_query']['p50']} ms")
                await st.stop_proc(worker)
                s.remove("worker")
    return out


async def main(args) -> Report:
    args.sizes = sorted(int(x) for x in args.sizes.split(","))
    args.cases = args.cases or max(args.sizes) + max(args.sizes) // 10
    report = Report("memory", params={"sizes": args.sizes, "cases": args.cases, "samples": args.samples})
    report.load_before = load_now()
    o = await side(args, "ours", report)
    b = await side(args, "bare", report)
    for m in args.sizes:
        om, bm = o[m], b[m]
        per_o = (om["full"] - om["empty"]) / max(1, om["filled"]) / 1024
        per_b = (bm["full"] - bm["empty"]) / max(1, bm["filled"]) / 1024
        report.add(f"M={m}: worker RSS cache empty", mib(om["empty"]), mib(bm["empty"]), "MiB")
        report.add(f"M={m}: worker RSS cache full", mib(om["full"]), mib(bm["full"]), "MiB")
        report.add(f"M={m}: RSS per cached case", round(per_o, 1), round(per_b, 1), "KiB")
        report.add(f"M={m}: fill time per case", round(1000 * om["fill_s"] / om["filled"], 1),
                   round(1000 * bm["fill_s"] / bm["filled"], 1), "ms")
        for key, label in (("query", "query"), ("signal_query", "signal+query")):
            report.add(f"M={m}: {label} p50", om[key]["p50"], bm[key]["p50"], "ms")
            report.add(f"M={m}: {label} p99", om[key]["p99"], bm[key]["p99"], "ms")
    report.extra = {"ours": o, "bare": b}
    report.notes.append(f"{args.cases} open cases per side; a random case is cached with odds about "
                        + ", ".join(f"{min(1, m / args.cases):.0%} (M={m})" for m in args.sizes))
    return report


def parser():
    p = base_parser(__doc__.splitlines()[0], 0)
    p.add_argument("--sizes", default="50,200", help="max_cached_workflows values (default 50,200)")
    p.add_argument("--cases", type=int, default=0, help="open cases (default: largest size + 10%%)")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--budget", type=float, default=90, help="seconds at most per latency figure")
    p.add_argument("--settle-timeout", type=float, default=1800)
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
