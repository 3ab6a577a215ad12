"""The lab decides what the workflow decides (issue 21): a random book with a random borrower,
each loan played through the real CollectionWorkflow on the time-skipping server (simulation with
behaviour draws) and through the lab's engine; the timelines must be equal event for event.
bench/lab_equivalence.py runs the same check on 200 loans."""

from __future__ import annotations

import collections
from datetime import UTC, date, datetime

from bench.lab_book import random_book, random_model
from bench.lab_equivalence import book, compare, first_difference
from service.lab_engine import resolve_for, run_case

BOOK_SEED = 11
BOOK_SIZE = 20


async def test_the_lab_and_the_workflow_give_the_same_timeline_for_every_loan() -> None:
    loans, model = book(BOOK_SIZE, BOOK_SEED, date.today())
    results = await compare(loans, model, seed=BOOK_SEED)
    assert [r.describe() for r in results if not r.equal] == []
    # The book exercises the borrower: contacts answered and not, payments, promises, tasks.
    kinds = collections.Counter(e.kind for r in results for e in r.lab.timeline or [])
    for kind in ("contact_sent", "payment", "task_outcome", "case_closed"):
        assert kinds[kind] > 0, kind
    states = {r.lab.state.value for r in results}
    assert len(states) > 1, states


def test_the_same_seed_gives_the_same_timeline_and_another_seed_another() -> None:
    loans = random_book(8, seed=5, today=date(2026, 12, 1), prefix="SEED")
    model = random_model(5)
    start = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    differs = 0
    for loan in loans:
        policy = resolve_for(loan, loan.policy or "default")
        once = run_case(loan, policy, model, 7, start=start).timeline or []
        again = run_case(loan, policy, model, 7, start=start).timeline or []
        other = run_case(loan, policy, model, 8, start=start).timeline or []
        assert first_difference(once, again) is None, loan.loan_id
        differs += first_difference(once, other) is not None
    assert differs > 0
