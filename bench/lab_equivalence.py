"""The lab decides what the workflow decides: a random book with a random borrower, each loan
played through the real CollectionWorkflow on the time-skipping server (simulation with
behaviour draws) and through the lab's engine (service/lab_engine.py), timelines compared event
for event (time, kind, summary, rule, actor, detail).

    python -m bench.lab_equivalence --n 200 --seed 21

tests/lab/test_equivalence.py runs `compare` on a smaller book in `make test`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from bench.common import log
from bench.lab_book import random_book, random_model
from bench.report import Report, load_now, run
from contracts.behaviour import BehaviourModel
from contracts.messages import CaseResult, LoanInput, TimelineEvent


@dataclass
class Comparison:
    loan_id: str
    workflow: CaseResult
    lab: CaseResult
    first_difference: int | None  # index of the first event that differs, None if all equal

    @property
    def equal(self) -> bool:
        return self.first_difference is None

    def describe(self) -> str:
        i = self.first_difference
        if i is None:
            return f"{self.loan_id}: {len(self.lab.timeline or [])} events equal"
        w, lab = self.workflow.timeline or [], self.lab.timeline or []
        return (f"{self.loan_id}: event {i} differs\n  workflow: {_at(w, i)}\n  lab:      "
                f"{_at(lab, i)}")


def _at(events: list[TimelineEvent], i: int) -> str:
    return repr(_key(events[i])) if i < len(events) else "(none)"


def _key(e: TimelineEvent) -> tuple[Any, ...]:
    return (e.at, e.kind, e.summary, e.rule, e.actor, e.detail)


def first_difference(a: Sequence[TimelineEvent], b: Sequence[TimelineEvent]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if _key(x) != _key(y):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


async def compare(loans: Sequence[LoanInput], model: BehaviourModel,
                  seed: int) -> list[Comparison]:
    """Each loan through the workflow, one after another on one time-skipping server, and through
    the lab from the instant the workflow's case opened. The server's clock only moves forward,
    so each loan's due date moves by the days the server has gone past `today` of the book."""
    from contracts.case_io import CollectionInput
    from infra.codec import data_converter
    from infra.temporal_server import start_test_server
    from service.lab_engine import resolve_for, run_case
    from service.policy_simulation import play, simulation_worker

    env = await start_test_server(data_converter=data_converter(None))
    out: list[Comparison] = []
    try:
        base = (await env.get_current_time()).date()
        async with simulation_worker(env):
            for loan in loans:
                moved = (await env.get_current_time()).date() - base
                loan = dataclasses.replace(loan, due_date=loan.due_date + moved)
                policy = resolve_for(loan, loan.policy or "default")
                wf = await play(env, CollectionInput(loan=loan, policy=policy, simulate=True,
                                                     behaviour=model, seed=seed))
                start = (wf.timeline or [])[0].at
                lab = run_case(loan, policy, model, seed, start=start, horizon_days=None)
                out.append(Comparison(loan.loan_id, wf, lab,
                                      first_difference(wf.timeline or [], lab.timeline or [])))
    finally:
        await env.shutdown()
    return out


def book(n: int, seed: int, today: date) -> tuple[list[LoanInput], BehaviourModel]:
    return random_book(n, seed=seed, today=today, prefix="EQ"), random_model(seed)


async def main(args: argparse.Namespace) -> Report:
    report = Report("lab_equivalence", params={"n": args.n, "seed": args.seed})
    report.load_before = load_now()
    loans, model = book(args.n, args.seed, date.today())
    t = time.perf_counter()
    results = await compare(loans, model, args.seed)
    secs = time.perf_counter() - t
    matched = sum(r.equal for r in results)
    events = sum(len(r.lab.timeline or []) for r in results)
    for r in results:
        if not r.equal:
            log(r.describe())
    log(f"{matched} of {len(results)} timelines equal event for event ({events} events)")
    report.add("timelines equal", matched, unit=f"of {len(results)}",
               target=f"{len(results)}", met=matched == len(results))
    report.add("events compared", events)
    report.add("seconds (both sides)", round(secs, 1), unit="s")
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--no-write", action="store_true")
    run(main, p.parse_args())
