"""Issue 14 on the real workflow (time-skipping server, PostgreSQL, the emulator): agent calls
inside the rules, holds that withdraw tasks, a rule on every decision, bad starts that end at
once, and payments that are never dropped.

The borrower is in Asia/Shanghai (the `cn` pack: 08:00-22:00, 3 connected calls a day).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts import loan_rules
from contracts.messages import (
    HoldInput,
    PaymentStatus,
    ResolveHoldInput,
    Stage,
    TaskOutcome,
    TaskOutcomeInput,
)
from contracts.names import WORKFLOW_TYPE, workflow_id_for
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from policies import compliance
from tests.helpers import (
    Case,
    Stack,
    eventually,
    make_loan,
    near,
    new_loan,
    pay,
    pinned,
    start_case,
    utc_at,
)
from workflows.collection_workflow import CollectionWorkflow

CALL_RULES = ("cn.window_and_caps", "cn.cba.quiet_hours_22_08")


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


def _write_off(day: int) -> Step:
    return Step(id="write-off", day=day, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                template="write_off_notice", notice="collection_ending")


async def _open(stack: Stack, loan_id: str, steps: list[Step], due_in: int = 0) -> Case:
    loan, now, today = await new_loan(stack, loan_id, due_in, 9)
    policy = pinned(loan).model_copy(update={"steps": steps, "ladder_name": "test"})
    handle = await start_case(stack.env.client, loan, stack.task_queue, policy)
    return Case(stack, loan, handle, now, today)


async def _task(case: Case, step_id: str, status: str | None = None) -> asyncpg.Record:
    def ready(r: asyncpg.Record | None) -> bool:
        return r is not None and (status is None or r["status"] == status)
    row: asyncpg.Record = await eventually(
        lambda: case.pool.fetchrow("SELECT * FROM tasks WHERE loan_id = $1 AND step_id = $2",
                                   case.loan.loan_id, step_id), ready)
    return row


def _call(day: int, hour: int, step_id: str = "call", **kw: Any) -> Step:
    return Step(id=step_id, day=day, hour=hour, stage=Stage.EARLY, kind="call", **kw)


# ------------------------------------------------------------------- 2. calls inside the rules


def test_a_task_span_is_cut_to_the_allowed_periods_across_a_clock_change() -> None:
    """A call created at 21:30 the evening before New York springs forward: 24 hours later is
    22:30 local, in the night, so the task is due at 22:00 (the end of the window)."""
    loan = pinned(_loan_ny())
    pack = loan.rule_pack.model_copy(update={"window_end": datetime(2026, 1, 1, 22).time()})
    start = datetime(2026, 3, 8, 2, 30, tzinfo=UTC)  # 2026-03-07 21:30 EST
    periods = compliance.allowed_periods(start, start + timedelta(days=1), "America/New_York",
                                         pack)
    assert [(compliance.local(a, "America/New_York").strftime("%d %H:%M"),
             compliance.local(b, "America/New_York").strftime("%d %H:%M")) for a, b in periods] \
        == [("07 21:30", "07 22:00"), ("08 08:00", "08 22:00")]


def _loan_ny() -> Any:
    return make_loan("PURE-NY", datetime(2026, 3, 1).date(), timezone="America/New_York",
                     phone="+12125550123", currency="USD", jurisdiction="US")


async def test_a_late_call_is_recorded_at_its_time_as_a_breach(stack: Stack, loan_id: str,
                                                              ) -> None:
    case = await _open(stack, loan_id, [_call(1, 11), _write_off(6)])
    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 11) + timedelta(minutes=5))
    task = await _task(case, "call", "open")
    # The task says when it may be worked: the window in local time and the caps left today.
    assert (task["timezone"], task["window_start"], task["window_end"], task["rule_pack"]) == (
        "Asia/Shanghai", "08:00", "22:00", "cn")
    windows = json.loads(task["work_windows"])
    assert windows[0][0] <= windows[0][1] and len(windows) == 2
    assert json.loads(task["caps_left"]) == {"cn.nifa.connected_calls_per_day": 2,
                                             "cn.cba.unanswered_per_channel_per_day": 5}
    assert near(task["due_by"], utc_at(day + timedelta(days=1), 11))
    # The agent rang at 23:30 local and reports it at 23:45.
    await case.sleep_until(utc_at(day, 23) + timedelta(minutes=45))
    await case.update(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.REACHED, agent="a7",
        at=utc_at(day, 23) + timedelta(minutes=30)))
    task = await _task(case, "call", "done")
    assert task["contacted_at"] == utc_at(day, 23) + timedelta(minutes=30)
    assert task["breach_rule"] == "cn.cba.quiet_hours_22_08"
    row = await eventually(
        lambda: case.pool.fetchrow("SELECT * FROM contacts WHERE idempotency_key = $1",
                                   task["task_key"]),
        lambda r: r is not None and r["decision"] == "breach")
    assert row["occurred_at"] == utc_at(day, 23) + timedelta(minutes=30)  # not the creation time
    assert (row["rule"], row["outcome"]) == ("cn.cba.quiet_hours_22_08", "connected")
    assert row["local_date"] == day
    breach = (await case.wait_events("compliance_breach"))[0]
    assert breach["rule"] == "cn.cba.quiet_hours_22_08" and "23:30 local" in breach["summary"]
    assert (await case.status()).breaches == 1
    assert "compliance_breach" in await case.kinds()
    await case.finish()


async def test_a_call_inside_the_window_is_no_breach(stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id, [_call(1, 11), _write_off(6)])
    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 15))
    task = await _task(case, "call", "open")
    at = utc_at(day, 14)
    await case.update(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.NO_ANSWER, agent="a7", at=at))
    row = await eventually(
        lambda: case.pool.fetchrow("SELECT * FROM contacts WHERE idempotency_key = $1",
                                   task["task_key"]),
        lambda r: r is not None and r["outcome"] == "unanswered")
    assert (row["decision"], row["rule"], row["occurred_at"]) == ("sent", "cn.window_and_caps", at)
    assert (await case.status()).breaches == 0
    await case.finish()


async def test_an_outcome_time_in_the_future_is_refused(stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id, [_call(1, 11), _write_off(6)])
    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 12))
    task = await _task(case, "call", "open")
    why = await case.refused(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.REACHED, at=utc_at(day, 18)))
    assert why == "at is in the future"
    why = await case.refused(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.REACHED, at=utc_at(day, 9)))
    assert why.startswith("at is before the task was created")
    await case.finish()


# ----------------------------------------------------------- 3. a hold withdraws open tasks


async def test_a_dispute_withdraws_the_open_call_and_refuses_its_outcome(
    stack: Stack, loan_id: str,
) -> None:
    case = await _open(stack, loan_id, [_call(1, 11), _call(3, 11, "call-2"), _write_off(40)])
    day = case.loan.due_date + timedelta(days=1)
    await case.sleep_until(utc_at(day, 12))
    task = await _task(case, "call", "open")
    await case.update(CollectionWorkflow.hold, HoldInput(actor="sup", kind="dispute",
                                                         reason="borrower disputes the debt"))
    task = await _task(case, "call", "withdrawn")
    assert (task["outcome"], task["reason"]) == ("withdrawn", "dispute hold")
    why = await case.refused(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.REACHED, agent="a7"))
    assert why == f"task {task['task_key']!r} was withdrawn: dispute hold"
    event = (await case.wait_events("task_withdrawn"))[0]
    assert event["rule"] == "case.hold.dispute"
    row = await eventually(
        lambda: case.pool.fetchrow("SELECT * FROM contacts WHERE idempotency_key = $1",
                                   task["task_key"]),
        lambda r: r is not None and r["decision"] == "withdrawn")
    assert row["rule"] == "case.hold.dispute"
    # While the hold lasts the ladder creates no call (call-2 was due on day 3).
    await case.sleep_until(utc_at(day + timedelta(days=4), 12))
    assert [r["step_id"] for r in await case.rows("tasks")] == ["call"]
    await case.update(CollectionWorkflow.resolve, ResolveHoldInput(actor="sup"))
    await case.finish()


# --------------------------------------------------------------- 4. every decision has a rule


async def test_no_contact_decision_lacks_a_rule(stack: Stack, loan_id: str) -> None:
    """A wrong number (then SMS and calls skipped), a deferral, sends, a breach, a withdrawal."""
    steps = [
        _call(1, 11),
        Step(id="sms-late", day=2, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
             template="early_reminder"),
        Step(id="email-night", day=2, hour=23, stage=Stage.EARLY, kind="message",
             channels=["email"], template="early_reminder"),
        _call(3, 11, "call-2"),
        Step(id="visit", day=4, hour=11, stage=Stage.MIDDLE, kind="visit"),
        _write_off(30),
    ]
    case = await _open(stack, loan_id, steps)
    due = case.loan.due_date
    await case.sleep_until(utc_at(due + timedelta(days=1), 12))
    task = await _task(case, "call", "open")
    await case.update(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=task["task_key"], outcome=TaskOutcome.WRONG_NUMBER, agent="a7"))
    await case.sleep_until(utc_at(due + timedelta(days=4), 12))
    visit = await _task(case, "visit", "open")
    await case.sleep_until(utc_at(due + timedelta(days=4), 23))
    await case.update(CollectionWorkflow.task_outcome, TaskOutcomeInput(
        task_key=visit["task_key"], outcome=TaskOutcome.VISITED, agent="f2",
        at=utc_at(due + timedelta(days=4), 22) + timedelta(minutes=30)))
    await case.wait_events("compliance_breach")
    await case.finish()
    rows = await eventually(lambda: case.rows("contacts"),
                            lambda rs: {"breach", "skipped", "deferred", "sent"}
                            <= {r["decision"] for r in rs})
    assert [dict(r) for r in rows if not r["rule"]] == []
    skipped = [r for r in rows if r["decision"] == "skipped"]
    assert {r["rule"] for r in skipped} == {"case.address_unusable"}
    assert {r["reason"] for r in skipped} == {"no valid phone number"}
    events = await case.events()
    decisions = [e for e in events if e["kind"].startswith("contact_")
                 or e["kind"] in ("task_outcome", "task_withdrawn", "compliance_breach")]
    assert decisions and [dict(e) for e in decisions if not e["rule"]] == []


# ------------------------------------------------------------------ 5. a bad start ends at once


def _raw_loan(loan_id: str, **changes: Any) -> dict[str, Any]:
    loan = {"loan_id": loan_id, "borrower_name": "Zhang Wei", "phone": "+8613812345678",
            "email": "zhang.wei@example.com", "locale": "zh-CN", "timezone": "Asia/Shanghai",
            "currency": "CNY", "amount_overdue": "1200.00", "due_date": "2026-11-20"}
    loan.update(changes)
    return loan


@pytest.mark.parametrize(("payload", "field"), [
    (lambda lid: _raw_loan(lid), "loan: is missing"),
    (lambda lid: {"loan": _raw_loan(lid, timezone="Mars/Olympus")}, "loan.timezone"),
    (lambda lid: {"loan": _raw_loan(lid, phone="12345")}, "loan.phone"),
    (lambda lid: {"loan": _raw_loan(lid, currency="XYZ")}, "loan.currency"),
    (lambda lid: {"loan": _raw_loan(lid, due_date="9999-12-31")}, "loan.due_date"),
    (lambda lid: {"loan": _raw_loan(lid, amount_overdue="-5")}, "loan.amount_overdue"),
], ids=["no-wrapper", "timezone", "phone", "currency", "due-date", "amount"])
async def test_a_plain_json_start_that_breaks_the_rules_fails_at_once(
    stack: Stack, loan_id: str, payload: Any, field: str,
) -> None:
    """As the Temporal CLI or a Java client would start it: a JSON object, no Python types."""
    raw = payload(loan_id)
    if "loan" in raw:
        raw["loan"]["due_date"] = raw["loan"]["due_date"].replace(
            "2026-11-20", (await stack.env.get_current_time()).date().isoformat())
    handle = await stack.env.client.start_workflow(
        WORKFLOW_TYPE, raw, id=workflow_id_for(loan_id), task_queue=stack.task_queue)
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), timeout=10)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidCaseInput"
    assert cause.non_retryable and field in cause.message, cause.message
    for personal in ("Zhang", "8613812345678", "12345", "zhang.wei"):
        assert personal not in cause.message
    # Findable: the workflow failed, with CollectionState=failed.
    history = await handle.fetch_history()
    states = [
        json.loads(fields["CollectionState"].data) for fields in (
            e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            for e in history.events
            if e.HasField("upsert_workflow_search_attributes_event_attributes"))
        if "CollectionState" in fields]
    assert states == ["failed"]
    assert not any(e.HasField("workflow_task_failed_event_attributes") for e in history.events)


def test_the_field_checks_name_the_field_and_never_the_value() -> None:
    today = datetime(2026, 12, 1).date()
    cases = {
        "12345": lambda: loan_rules.check_phone("12345"),
        "Mars/Olympus": lambda: loan_rules.check_timezone("Mars/Olympus"),
        "Zhang Wei": lambda: loan_rules.check_loan_id("Zhang Wei"),
        "0001-01-01": lambda: loan_rules.check_due_date("0001-01-01", today),
        "1.2345": lambda: loan_rules.check_amount("1.2345", "KWD", "amount"),
    }
    for value, check in cases.items():
        with pytest.raises(loan_rules.FieldProblem) as info:
            check()
        assert value not in str(info.value)
    for bad_id in ("..", "-", "a/b", ""):
        with pytest.raises(loan_rules.FieldProblem):
            loan_rules.check_loan_id(bad_id)
    assert loan_rules.check_amount("1.234", "KWD", "amount") == Decimal("1.234")
    assert loan_rules.check_phone("+86 138 1234 5678") == "+8613812345678"


# ------------------------------------------------------------ 6. money is never dropped


async def test_pay_update_answers_applied_duplicate_or_unapplied(stack: Stack, loan_id: str,
                                                                 ) -> None:
    case = await _open(stack, loan_id, [_call(5, 11), _write_off(30)], due_in=3)
    wrong = await case.update(CollectionWorkflow.record_payment, pay("p1", "100.00", "USD"))
    assert wrong.status == PaymentStatus.UNAPPLIED
    assert wrong.reason == "currency USD differs from the loan's CNY"
    assert (await case.update(CollectionWorkflow.record_payment, pay("p1", "100.00", "USD"))
            ).status == PaymentStatus.DUPLICATE
    negative = await case.update(CollectionWorkflow.record_payment, pay("p2", "-5.00"))
    assert (negative.status, negative.reason) == (PaymentStatus.UNAPPLIED,
                                                  "amount -5.00 is not positive")
    good = await case.update(CollectionWorkflow.record_payment, pay("p3", "200.00"))
    assert (good.status, good.outstanding) == (PaymentStatus.APPLIED, Decimal("1000.00"))
    assert (await case.update(CollectionWorkflow.record_payment, pay("p3", "200.00"))
            ).status == PaymentStatus.DUPLICATE
    # Malformed input is refused by the validator: nothing is written to history.
    with pytest.raises(WorkflowUpdateFailedError):
        await case.update(CollectionWorkflow.record_payment, pay(" ", "10.00"))
    with pytest.raises(WorkflowUpdateFailedError):
        await case.update(CollectionWorkflow.record_payment, pay("p4", "10.00", "dollars"))
    # The signal (signal-with-start) keeps such money too.
    await case.pay("p5", "50.00", "EUR")
    rows = await eventually(lambda: case.pool.fetch(
        "SELECT payment_id, amount, currency, reason, status FROM unapplied_payments"
        " WHERE loan_id = $1 ORDER BY id", case.loan.loan_id), lambda rs: len(rs) == 3)
    assert [(r["payment_id"], r["amount"], r["currency"], r["status"]) for r in rows] == [
        ("p1", Decimal("100.00"), "USD", "unapplied"), ("p2", Decimal("-5.00"), "CNY", "unapplied"),
        ("p5", Decimal("50.00"), "EUR", "unapplied")]
    assert (await case.status()).unapplied_payments == 3
    events = await case.wait_events("payment_unapplied", 3)
    assert all(e["rule"] == "ledger.payment_not_applicable" for e in events)
    assert [p[0] for p in await case.payments()] == ["p3"]
    await case.finish()
