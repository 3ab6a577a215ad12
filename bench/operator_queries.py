"""Operator queries: `list` through Temporal visibility and through PostgreSQL, and `report`.

A PostgreSQL book of `--book` cases generated with `bench.book.seed_book` (default 5,000; `make
bench` uses 100,000), and `--cases` real cases started through `start_many` on the dev server with
our worker running (so that visibility holds their search attributes). Then, one call at a time,
`--samples` calls each, rotating over a few filter sets:
- `list_cases(client, ...)` (Temporal visibility), against the same list query sent raw
  (`client.list_workflows(visibility_query(...))`) as the bare baseline;
- `list_cases_db(pool, ...)` (the `cases` table), against a raw SELECT of the same rows;
- `portfolio_report(pool)` over the whole book (no baseline).
Figures: ms per call, p50 and p99 (target < 200 ms each).

    python -m bench.operator_queries --book 100000 --cases 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from datetime import timedelta
from typing import Any

from bench.common import OUR_QUEUE, base_parser, local_today, log, make_loan
from bench.measure import Sampler, ms_summary, timed_samples
from bench.report import Report, load_now, run
from bench.stack import Stack

TARGET_MS = 200
# Keyword filters of `list_cases` / `list_cases_db` (and `visibility_query`).
FILTERS: list[dict[str, Any]] = [
    {}, {"stage": "pre_due"}, {"min_outstanding": 1000}, {"state": "active", "max_dpd": 0},
    {"policy_version": "default"}]
DB_FILTERS: list[dict[str, Any]] = [
    {}, {"stage": "late"}, {"min_outstanding": 5000},
    {"state": "active", "min_dpd": 30, "max_dpd": 90}, {"policy_version": "book@2025.2"}]


async def main(args: argparse.Namespace) -> Report:
    from service.case_filters import visibility_query
    from service.cases import start_many
    from service.listing import list_cases, list_cases_db
    from service.report import portfolio_report

    report = Report("operator_queries", params={"book": args.book, "cases": args.cases,
                                                "samples": args.samples, "limit": args.limit})
    report.load_before = load_now()
    async with Stack(pool_size=4) as st:
        with Sampler() as s:
            worker = await st.start_our_worker()
            s.add("worker", worker.pid)
            t0 = time.perf_counter()
            from bench.book import seed_book

            await seed_book(st.pool, args.book)
            seed_s = time.perf_counter() - t0
            log(f"book of {args.book} seeded in {seed_s:.1f}s; starting {args.cases} cases")
            due = local_today() + timedelta(days=60)
            await start_many(st.client,
                             (make_loan(f"OQ{i:06d}", due, i) for i in range(args.cases)),
                             task_queue=OUR_QUEUE)

            async def recorded() -> bool:
                live = await st.pool.fetchval(
                    "SELECT count(*) FROM cases WHERE NOT starts_with(loan_id, 'BOOK-')")
                return live >= args.cases

            await s.wait_idle("worker", timeout=args.settle_timeout, check=recorded)
            await asyncio.sleep(1.5)  # visibility trails the workflows by about a second
            log("settled; timing queries")
            lim = args.limit
            sizes: dict[str, list[int]] = {"list_temporal": [], "list_db": []}
            f_t, f_tb, f_d, f_db = (itertools.cycle(FILTERS), itertools.cycle(FILTERS),
                                    itertools.cycle(DB_FILTERS), itertools.cycle(DB_FILTERS))

            async def list_t(_: int) -> None:
                rows = await list_cases(st.client, limit=lim, **next(f_t))
                sizes["list_temporal"].append(len(rows))

            async def list_t_raw(_: int) -> None:
                q = visibility_query(**next(f_tb))
                n = 0
                async for _wf in st.client.list_workflows(q, limit=lim, page_size=min(lim, 1000)):
                    n += 1

            async def list_d(_: int) -> None:
                sizes["list_db"].append(len(await list_cases_db(st.pool, limit=lim, **next(f_d))))

            async def list_d_raw(_: int) -> None:
                f = next(f_db)
                conds, vals = [], []
                for k, v in f.items():
                    col = {"min_outstanding": "outstanding >=", "min_dpd": "days_past_due >=",
                           "max_dpd": "days_past_due <=", "stage": "stage =", "state": "state =",
                           "policy_version": "policy_name || '@' || policy_version ="}[k]
                    vals.append(v)
                    conds.append(f"{col} ${len(vals)}")
                vals.append(lim)
                await st.pool.fetch(
                    "SELECT loan_id, state, stage, days_past_due, outstanding, currency, "
                    "assigned_agent, policy_name, policy_version FROM cases WHERE "
                    + (" AND ".join(conds) or "TRUE")
                    + f" ORDER BY outstanding DESC, loan_id LIMIT ${len(vals)}", *vals)

            report_rows = []

            async def rep(_: int) -> None:
                r = await portfolio_report(st.pool)
                report_rows.append(len(r.rows))

            b = args.budget
            lt = await timed_samples(list_t, args.samples, budget=b)
            ltr = await timed_samples(list_t_raw, args.samples, budget=b)
            ld = await timed_samples(list_d, args.samples, budget=b)
            ldr = await timed_samples(list_d_raw, args.samples, budget=b)
            rp = await timed_samples(rep, max(5, args.samples // 4), budget=b)
            db_cases = await st.pool.fetchval("SELECT count(*) FROM cases")
    for label, ours, bare in (("list via Temporal visibility", lt, ltr),
                              ("list via PostgreSQL", ld, ldr),
                              ("portfolio report", rp, None)):
        so = ms_summary(ours)
        sb = ms_summary(bare) if bare is not None else {"p50": None, "p99": None}
        report.add(f"{label} p50", so["p50"], sb["p50"], "ms")
        report.add(f"{label} p99", so["p99"], sb["p99"], "ms", target=f"< {TARGET_MS} ms",
                   met=(so["p99"] or 1e9) < TARGET_MS)
    report.add("book seeded (COPY)", round(seed_s, 1), None, "s")
    report.notes.append(
        f"cases table: {db_cases} rows ({args.book} book + {args.cases} live); "
        f"visibility: {args.cases} CollectionWorkflows; rows per list call (limit {lim}): Temporal "
        f"{sorted(set(sizes['list_temporal']))}, PostgreSQL {sorted(set(sizes['list_db']))}; "
        f"report groups {sorted(set(report_rows))}")
    report.notes.append("bare: the same visibility query sent raw; a raw SELECT of the same rows")
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 0)
    p.add_argument("--book", type=int, default=5000,
                   help="cases in the PostgreSQL book (default 5000)")
    p.add_argument("--cases", type=int, default=300,
                   help="live cases started for visibility (default 300)")
    p.add_argument("--samples", type=int, default=40, help="calls per figure (report: a quarter)")
    p.add_argument("--limit", type=int, default=100, help="rows per list call")
    p.add_argument("--budget", type=float, default=120, help="seconds at most per figure")
    p.add_argument("--settle-timeout", type=float, default=900)
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
