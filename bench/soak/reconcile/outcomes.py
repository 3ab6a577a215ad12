"""Agent outcomes: each one the case accepted is recorded on its task."""

from __future__ import annotations

from collections.abc import Sequence

from bench.soak.reconcile.inputs import ReportedOutcome, TaskRow


def check_outcomes(reported: Sequence[ReportedOutcome],
                   tasks: Sequence[TaskRow]) -> tuple[int, int, list[str]]:
    """Outcomes the case accepted are on their task; returns (accepted, recorded, lost)."""
    by_key = {t.task_key: t for t in tasks}
    accepted = {r.task_key: r for r in reported if r.accepted}
    lost = []
    recorded = 0
    for key, r in sorted(accepted.items()):
        t = by_key.get(key)
        if t is not None and t.status == "done" and t.outcome == r.outcome:
            recorded += 1
        else:
            lost.append(f"{r.loan_id} task {key}: outcome {r.outcome} accepted, task "
                        f"{t.status if t else 'missing'} {t.outcome if t else ''}".rstrip())
    return len(accepted), recorded, lost
