"""The strategy lab's speed: a synthetic book under two policies through the lab's engine, and a
sample of the same lifecycles through the real workflow on the time-skipping server.

Ours: `lab.engine.run_book` (the real case code on a virtual clock, workflows/virtual_loop.py) over
`--n` loans of `lab.synthetic.synthetic_book` under `default` and the draft
examples/challenger.toml, 180 policy days each, with the shipped behaviour model, in
`--processes` processes, end to end (policy files read, processes started, results back).
Bare: the first `--sample` loans of the book under each policy played one after another through
CollectionWorkflow on a time-skipping server (simulation with the same behaviour draws), to the
case's end; the lab plays the same sample in this process, to the end too, for the ratio.

    python -m bench.lab_speed --n 10000 --sample 50
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from datetime import UTC, datetime
from datetime import time as dtime

from bench.common import ROOT, log
from bench.report import Report, load_now, run

TARGET_SECONDS = 60
POLICIES = ("default", str(ROOT / "examples" / "challenger.toml"))


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def main(args: argparse.Namespace) -> Report:
    from contracts.case_io import CollectionInput
    from infra.codec import data_converter
    from infra.temporal_server import start_test_server
    from lab.engine import resolve_for, run_book, run_case
    from lab.model_file import load_model
    from lab.synthetic import ANCHOR, synthetic_book
    from service.policy_simulation import play, simulation_worker

    report = Report("lab_speed", params={
        "n": args.n, "policies": ["default", "examples/challenger.toml"], "days": 180,
        "processes": args.processes, "sample": args.sample, "model": "lab/models/default.toml"})
    report.load_before = load_now()
    model = load_model(ROOT / "lab" / "models" / "default.toml")
    start = datetime.combine(ANCHOR, dtime(1, 0), UTC)

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    loans = synthetic_book(args.n, seed=args.seed)
    lifecycles, per_policy = 0, {}
    for policy in POLICIES:
        t = time.perf_counter()
        results = run_book(loans, policy, model, args.seed, start=start, horizon_days=180,
                           processes=args.processes)
        per_policy[policy] = time.perf_counter() - t
        lifecycles += len(results)
        cured = sum(r.state.value in ("paid", "settled") for r in results)
        log(f"{policy}: {len(results)} lifecycles in {per_policy[policy]:.1f}s, {cured} cured")
    book_secs, book_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    log(f"book: {lifecycles} lifecycles in {book_secs:.1f}s ({lifecycles / book_secs:.0f}/s)")

    # The sample: the same loans through the workflow (to the case's end) and the lab.
    sample = loans[:args.sample]
    env = await start_test_server(data_converter=data_converter(None))
    wf_secs = 0.0
    lab_secs = 0.0
    played = 0
    try:
        async with simulation_worker(env):
            for policy in POLICIES:
                for loan in sample:
                    # The server's clock only moves forward: each loan keeps its days to due.
                    moved = (await env.get_current_time()).date() - ANCHOR
                    shifted = dataclasses.replace(
                        loan, loan_id=f"{loan.loan_id}-{played}",
                        due_date=loan.due_date + moved)
                    pinned = resolve_for(shifted, policy)
                    t = time.perf_counter()
                    wf = await play(env, CollectionInput(loan=shifted, policy=pinned,
                                                         simulate=True, behaviour=model,
                                                         seed=args.seed))
                    wf_secs += time.perf_counter() - t
                    opened = (wf.timeline or [])[0].at
                    t = time.perf_counter()
                    run_case(shifted, pinned, model, args.seed, start=opened, horizon_days=None)
                    lab_secs += time.perf_counter() - t
                    played += 1
    finally:
        await env.shutdown()
    wf_ms, lab_ms = 1000 * wf_secs / played, 1000 * lab_secs / played
    log(f"sample: workflow {wf_ms:.1f} ms/lifecycle, lab {lab_ms:.2f} ms/lifecycle "
        f"({wf_ms / lab_ms:.0f}x)")

    report.add("book seconds, both policies", round(book_secs, 1), unit="s",
               target=f"< {TARGET_SECONDS} s", met=book_secs < TARGET_SECONDS)
    report.add("book lifecycles/s", round(lifecycles / book_secs), unit="/s")
    # CPU of this process and the pool's: what the run would take on idle cores.
    report.add("book CPU ms/lifecycle", round(1000 * book_cpu / lifecycles, 2), unit="ms")
    idle = book_cpu / args.processes
    report.add(f"book seconds on {args.processes} idle cores (CPU / processes)", round(idle, 1),
               unit="s", target=f"< {TARGET_SECONDS} s", met=idle < TARGET_SECONDS)
    for policy, secs in per_policy.items():
        report.add(f"seconds, {policy.rsplit('/', 1)[-1]}", round(secs, 1), unit="s")
    report.add("sample ms/lifecycle (lab vs workflow)", round(lab_ms, 2), round(wf_ms, 1),
               unit="ms")
    report.add("workflow/lab per lifecycle", round(wf_ms / lab_ms, 1), unit="x")
    report.notes.append(
        f"book: {args.n} loans x {len(POLICIES)} policies, 180 days, {args.processes} processes, "
        f"end to end; sample: {args.sample} loans x {len(POLICIES)} policies to the case's end, "
        "workflow one after another on the time-skipping server, lab in one process")
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--sample", type=int, default=50)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-write", action="store_true")
    run(main, p.parse_args())
