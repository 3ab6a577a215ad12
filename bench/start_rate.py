"""Start rate: N collection cases through `service.cases.start_many` against N bare workflows.

Ours: `start_many(client, loans)` (the starter's bulk path: one `start_workflow` per loan with
REJECT_DUPLICATE, our pydantic converter and AES-GCM codec, `concurrency` requests in flight).
Bare: `client.start_workflow(BareWorkflow.run, ...)` gathered in batches of 200, default converter.
Both on the same dev server (SQLite file), in ABBA order (bare, ours, ours, bare; N/2 each) so that
neither side profits from a smaller database. The loans fall due a year from now, and by default
no worker runs: starting is measured by the client alone (`--with-workers` runs both workers,
which then compete for the CPU with the starts).

    python -m bench.start_rate --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import timedelta

from bench.common import OUR_QUEUE, base_parser, local_today, log, make_loan, start_bare
from bench.measure import Sampler, file_size, mib
from bench.report import Report, load_now, run
from bench.stack import Stack, count

TARGET = 0.8


async def main(args: argparse.Namespace) -> Report:
    from service.cases import start_many

    n = args.n
    report = Report("start_rate", params={
        "n": n, "ours_concurrency": args.concurrency or "start_many default (50)",
        "bare_batch": 200, "workers": "running" if args.with_workers else "none", "order": "ABBA"})
    report.load_before = load_now()
    async with Stack(postgres=args.with_workers, emulator=args.with_workers) as st:
        with Sampler() as s:
            s.add("server", st.server_ps.pid)
            s.add("client", os.getpid())
            if args.with_workers:
                s.add("worker", (await st.start_our_worker()).pid)
                s.add("bare_worker", (await st.start_bare_worker()).pid)
            due = local_today() + timedelta(days=365)
            wait = int(timedelta(days=365).total_seconds())
            halves = [n // 2, n - n // 2]
            plan = [("bare", halves[0]), ("ours", halves[0]), ("ours", halves[1]),
                    ("bare", halves[1])]
            tot = {side: {"n": 0, "secs": 0.0, "server_cpu": 0.0, "client_cpu": 0.0}
                   for side in ("ours", "bare")}
            outcomes: dict[str, int] = {}
            for rnd, (side, k) in enumerate(plan):
                if k == 0:
                    continue
                if side == "ours":
                    loans = [make_loan(f"SR{rnd}-{i:06d}", due, i) for i in range(k)]
                c0, k0 = s.cpu_seconds("server"), s.cpu_seconds("client")
                t0 = time.perf_counter()
                if side == "ours":
                    kw = {"concurrency": args.concurrency} if args.concurrency else {}
                    got = await start_many(st.client, loans, task_queue=OUR_QUEUE, **kw)
                    for key, v in got.items():
                        outcomes[key] = outcomes.get(key, 0) + v
                else:
                    ids = [f"bare-sr{rnd}-{i:06d}" for i in range(k)]
                    await start_bare(st.bare_client, ids, wait)
                dt = time.perf_counter() - t0
                t = tot[side]
                t["n"] += k
                t["secs"] += dt
                t["server_cpu"] += s.cpu_seconds("server") - c0
                t["client_cpu"] += s.cpu_seconds("client") - k0
                log(f"round {rnd + 1}/4 {side}: {k} starts in {dt:.2f}s = {k / dt:.0f}/s")
            server_peak = s.peak("server")
            await asyncio.sleep(1)  # visibility is eventually consistent
            n_ours = await count(st.client, "WorkflowType='CollectionWorkflow'")
            n_bare = await count(st.client, "WorkflowType='BareWorkflow'")
            db = file_size(st.sqlite_file)
    rate = {side: t["n"] / t["secs"] for side, t in tot.items()}
    ratio = rate["ours"] / rate["bare"]
    report.add("starts/s", round(rate["ours"], 1), round(rate["bare"], 1), "/s",
               target=f"ratio >= {TARGET}", met=ratio >= TARGET)
    ours, bare = tot["ours"], tot["bare"]
    report.add("server CPU per start", round(1000 * ours["server_cpu"] / ours["n"], 2),
               round(1000 * bare["server_cpu"] / bare["n"], 2), "ms")
    report.add("client CPU per start", round(1000 * ours["client_cpu"] / ours["n"], 2),
               round(1000 * bare["client_cpu"] / bare["n"], 2), "ms")
    report.add("workflows visible after", n_ours, n_bare)
    report.add("server peak RSS (both sides)", mib(server_peak), None, "MiB")
    report.add("SQLite file (both sides)", mib(db), None, "MiB")
    report.extra = {"outcomes": outcomes, "totals": tot}
    report.notes.append(
        f"ours: start_many outcomes {outcomes}; "
        f"workers {'running' if args.with_workers else 'not running'} "
        "(starting is measured by the client)")
    if outcomes.get("started", 0) != n:
        report.notes.append(f"WARNING: only {outcomes.get('started', 0)} of {n} cases started")
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 300)
    p.add_argument("--concurrency", type=int, default=None,
                   help="start_many concurrency (default: its own)")
    p.add_argument("--with-workers", action="store_true", help="run both workers while starting")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
