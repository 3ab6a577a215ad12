"""Cases: every one started ended, or still progressing, and PostgreSQL and Temporal agree."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.soak.reconcile.inputs import END_STATES, CaseRow, Loan, WorkflowFact


@dataclass
class CaseFigures:
    started: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # running and still progressing
    disagree: list[str] = field(default_factory=list)  # PostgreSQL and Temporal disagree


def check_cases(loans: Sequence[Loan], workflows: Sequence[WorkflowFact],
                cases: Sequence[CaseRow]) -> CaseFigures:
    """Every case started exists in Temporal and PostgreSQL; each is in an end state, or still
    progressing (its history grew between two looks); the two stores agree on how it ended."""
    f = CaseFigures()
    wf = {w.loan_id: w for w in workflows}
    rows = {c.loan_id: c for c in cases}
    for loan in loans:
        if not loan.started:
            continue
        f.started += 1
        w, c = wf.get(loan.loan_id), rows.get(loan.loan_id)
        if w is None:
            f.stuck.append(f"{loan.loan_id}: started, but Temporal has no workflow")
            continue
        state = w.state or (c.state if c else "unknown")
        f.by_state[state if w.status in ("running", "completed") else w.status] += 1
        if w.status == "running":
            if w.progressing:
                f.unfinished.append(f"{loan.loan_id}: running, in state {state}")
            else:
                f.stuck.append(f"{loan.loan_id}: running in state {state}, history not growing "
                               f"({w.history_length} events)"
                               + (f", pending {w.pending}" if w.pending else ""))
            continue
        if w.status != "completed":
            f.stuck.append(f"{loan.loan_id}: workflow {w.status}")
            continue
        if c is None:
            f.disagree.append(f"{loan.loan_id}: completed in Temporal, no PostgreSQL case row")
        elif c.state not in END_STATES or (w.state is not None and c.state != w.state):
            f.disagree.append(f"{loan.loan_id}: Temporal {w.state}, PostgreSQL {c.state}")
    return f
