"""The agents' queue under a fixed number of calls a day: which order recovers more?

A backtest's timelines give every call task its cases created (when, at which stage, on which
balance, with which priority, due by when, and when it stopped being open: withdrawn, or the case
closed). Each day, agents make `calls_per_day` calls from the tasks open that day, chosen either
as the queue always chose (priority, then deadline) or by the amount a call is expected to
recover (service/queue_priority.py, the ranking the queue uses with a model); a task not called
stays in the queue until it is due. A strategy's figure is the expected recovery of the calls it
made (the model's expectation, so the comparison carries no noise of its own draws).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final

from contracts.behaviour import BehaviourModel
from contracts.messages import CaseResult, LoanInput, Stage
from contracts.policy import ResolvedPolicy
from service import queue_priority

CALL: Final = "call"
_DUE_BY: Final = re.compile(r"due by (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC")
_STAGE_CHANGE: Final = re.compile(r"stage \w+ -> (\w+)")


@dataclass(frozen=True)
class CallTask:
    task_key: str
    loan_id: str
    currency: str
    stage: str
    outstanding: Decimal
    priority: int
    created: datetime
    due_by: datetime
    closed: datetime  # no longer open from then: due, withdrawn, or the case closed
    expected: Decimal  # what one call is expected to recover


@dataclass(frozen=True)
class Strategy:
    order: str  # queue_priority.BY_DUE or BY_EXPECTED
    calls: int
    expected_recovery: dict[str, Decimal]  # by currency


@dataclass(frozen=True)
class CapacityComparison:
    calls_per_day: int
    tasks: int
    by_due: Strategy
    by_expected: Strategy


def _due_by(summary: str, created: datetime, policy: ResolvedPolicy,
            deadline_days: int | None) -> datetime:
    found = _DUE_BY.search(summary)
    if found:
        return datetime.strptime(found[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return created + timedelta(days=deadline_days or policy.settings.call_deadline_days)


def call_tasks(loan: LoanInput, policy: ResolvedPolicy, result: CaseResult,
               model: BehaviourModel) -> list[CallTask]:
    """The case's call tasks, each with its stage, balance and expected recovery per call."""
    steps = {s.id: s for s in policy.steps}
    stage = Stage.PRE_DUE.value
    outstanding = loan.amount_overdue + loan.interest + loan.fees
    made: list[CallTask] = []
    ends: dict[str, datetime] = {}
    closed_at: datetime | None = None
    for e in result.timeline or []:
        if e.kind == "stage_changed":
            moved = _STAGE_CHANGE.match(e.summary)
            stage = moved[1] if moved else stage
        elif e.kind == "payment":
            outstanding -= sum((Decimal(str(v)) for v in e.detail.get("allocation", {}).values()),
                               Decimal(0))
        elif e.kind == "task_created" and e.summary.startswith(f"{CALL} task"):
            step = steps.get(str(e.detail.get("step", "")))
            made.append(CallTask(
                task_key=str(e.detail.get("task_key", "")), loan_id=loan.loan_id,
                currency=loan.currency, stage=stage, outstanding=outstanding,
                priority=step.priority if step else 5, created=e.at,
                due_by=_due_by(e.summary, e.at, policy, step.deadline_days if step else None),
                closed=e.at, expected=queue_priority.expected_per_call(
                    model, channel=CALL, stage=stage, outstanding=outstanding,
                    currency=loan.currency)))
        elif e.kind == "task_withdrawn":
            ends[str(e.detail.get("task_key", ""))] = e.at
        elif e.kind == "case_closed":
            closed_at = e.at
    return [_with_end(t, ends.get(t.task_key), closed_at) for t in made]


def _with_end(task: CallTask, withdrawn: datetime | None, case_closed: datetime | None,
              ) -> CallTask:
    end = min(t for t in (task.due_by, withdrawn, case_closed) if t is not None)
    return replace(task, closed=max(end, task.created))


def _days(tasks: Sequence[CallTask]) -> list[date]:
    first = min(t.created for t in tasks).date()
    last = max(t.closed for t in tasks).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _play(tasks: Sequence[CallTask], calls_per_day: int, order: str) -> Strategy:
    choose: Callable[[list[CallTask]], list[CallTask]]
    if order == queue_priority.BY_EXPECTED:
        def choose(open_: list[CallTask]) -> list[CallTask]:
            return queue_priority.by_expected(open_, lambda t: t.expected, _key)
    else:
        def choose(open_: list[CallTask]) -> list[CallTask]:
            return queue_priority.by_due(open_, _key)
    called: set[str] = set()
    recovered: dict[str, Decimal] = {}
    for day in _days(tasks) if tasks else []:
        # Open at some time that day: created by its end, not closed before its start.
        open_ = [t for t in tasks if t.task_key not in called and t.created.date() <= day
                 and t.closed.date() >= day]
        for t in choose(open_)[:calls_per_day]:
            called.add(t.task_key)
            recovered[t.currency] = recovered.get(t.currency, Decimal(0)) + t.expected
    return Strategy(order, len(called), recovered)


def _key(task: CallTask) -> tuple[int, datetime]:
    return queue_priority.due_key(task.priority, task.due_by)


def compare(tasks: Sequence[CallTask], calls_per_day: int) -> CapacityComparison:
    """Both orders over the same tasks with `calls_per_day` calls each day."""
    if calls_per_day < 1:
        raise ValueError("agents make at least one call a day")
    return CapacityComparison(calls_per_day, len(tasks),
                              _play(tasks, calls_per_day, queue_priority.BY_DUE),
                              _play(tasks, calls_per_day, queue_priority.BY_EXPECTED))
