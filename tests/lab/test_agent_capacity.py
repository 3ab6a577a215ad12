"""The agents' queue under a fixed number of calls a day (lab/agent_capacity.py): on a book played
through the lab's engine, ranking the call tasks by expected recovery (the queue's order with a
model) recovers at least as much as the due order, and more when calls are scarce; with calls
enough for every task, both orders make the same calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.behaviour import BehaviourModel
from lab import agent_capacity
from lab.agent_capacity import CallTask
from lab.backtest import default_start
from lab.engine import resolve_for, run_book
from lab.model_file import load_model
from lab.synthetic import synthetic_book

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "lab" / "models" / "default.toml"
LOANS, SEED = 60, 7


@pytest.fixture(scope="module")
def model() -> BehaviourModel:
    return load_model(MODEL)


@pytest.fixture(scope="module")
def tasks(model: BehaviourModel) -> list[CallTask]:
    loans = synthetic_book(LOANS, seed=SEED)
    results = run_book(loans, "default", model, SEED, start=default_start(loans), processes=1)
    return [t for loan, result in zip(loans, results, strict=True)
            for t in agent_capacity.call_tasks(loan, resolve_for(loan, "default"), result, model)]


def test_the_timelines_give_call_tasks_with_their_stage_balance_and_figure(
        tasks: list[CallTask]) -> None:
    assert len(tasks) > LOANS  # several calls a case on the default ladder
    assert {t.stage for t in tasks} >= {"early", "middle"}
    for t in tasks:
        assert t.created < t.due_by and t.created <= t.closed <= t.due_by
        assert Decimal(0) <= t.expected < t.outstanding
    assert len({t.task_key for t in tasks}) == len(tasks)


@pytest.mark.parametrize("calls_per_day", [1, 2, 3, 5])
def test_ranking_by_expected_recovery_recovers_at_least_the_due_order(
        tasks: list[CallTask], calls_per_day: int) -> None:
    result = agent_capacity.compare(tasks, calls_per_day)
    due = result.by_due.expected_recovery["CNY"]
    expected = result.by_expected.expected_recovery["CNY"]
    assert expected >= due
    if calls_per_day <= 3:  # calls scarce: a clear gain
        assert expected > due * Decimal("1.1"), (calls_per_day, due, expected)


def test_with_calls_for_every_task_both_orders_make_the_same_calls(
        tasks: list[CallTask]) -> None:
    result = agent_capacity.compare(tasks, len(tasks))
    assert result.by_due.calls == result.by_expected.calls == len(tasks)
    assert result.by_due.expected_recovery == result.by_expected.expected_recovery


def _task(key: str, priority: int, expected: str, due_in_hours: int) -> CallTask:
    at = datetime(2026, 3, 2, 2, tzinfo=UTC)
    due = at + timedelta(hours=due_in_hours)
    return CallTask(task_key=key, loan_id=key, currency="CNY", stage="middle",
                    outstanding=Decimal(expected) * 10, priority=priority, created=at,
                    due_by=due, closed=due, expected=Decimal(expected))


def test_one_call_a_day_goes_to_the_urgent_task_by_due_order_and_the_rich_one_by_expected(
        ) -> None:
    urgent, rich = _task("urgent", 9, "10.00", 2), _task("rich", 5, "500.00", 3)
    result = agent_capacity.compare([urgent, rich], 1)
    assert result.by_due.expected_recovery == {"CNY": Decimal("10.00")}
    assert result.by_expected.expected_recovery == {"CNY": Decimal("500.00")}
    # The ranking is per day, not a plan: a rich task still open tomorrow is called first today,
    # and the urgent one lapses (the due order would have made both calls).
    later = _task("rich-tomorrow", 5, "500.00", 30)
    greedy = agent_capacity.compare([urgent, later], 1)
    assert greedy.by_due.expected_recovery == {"CNY": Decimal("510.00")}
    assert greedy.by_expected.expected_recovery == {"CNY": Decimal("500.00")}
