"""Payments and negotiation end to end on the time-skipping server, PostgreSQL and the emulator.

Each test asserts the case state (queries or the result), the messages the borrower received
(the emulator, filtered by the loan's own phone and email) and the rows written to PostgreSQL:
`tests.helpers.Case` reads all three.

The time-skipping server's clock carries over between tests: every test first moves it to a known
local hour of the borrower (Asia/Shanghai) and computes its dates from there (`open_case`). Time
only moves in `case.sleep` and `handle.result()`, so what a test reads between them is stable once
written.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.case_io import CollectionInput
from contracts.messages import (
    CaseResult,
    CaseState,
    CeaseInput,
    CloseInput,
    ExtensionInput,
    HoldInput,
    Installment,
    PlanInput,
    PromiseInput,
    ResolveHoldInput,
    SettlementInput,
    Stage,
    WaiverInput,
)
from contracts.names import WORKFLOW_TYPE, workflow_id_for
from infra.emulator import ProviderEmulator
from tests.helpers import (
    Case,
    Stack,
    eventually,
    near,
    new_loan,
    open_case,
    pay,
    pinned,
    settle_down,
    utc_at,
)
from workflows.collection_workflow import CollectionWorkflow

D = Decimal


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


# ----------------------------------------------------------------------------------- payments


async def test_duplicate_payment_is_ignored(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10)  # no ladder step for a week
    await case.pay("p1", "300.00")
    await case.pay("p1", "300.00")  # the loan system resends it
    await case.wait_events("payment")
    await case.wait_messages(1)
    await settle_down()

    st = await case.status()
    assert (st.state, st.paid_total, st.outstanding) == (CaseState.ACTIVE, D("300.00"), D("900.00"))
    assert (await case.kinds()).count("payment") == 1
    assert await case.payments() == [("p1", D("300.00"), {"fees": "50.00", "interest": "150.00",
                                                                "principal": "100.00"})]
    assert len(await case.events("payment")) == 1
    msgs = case.texts()
    assert len(msgs) == 1
    assert "We received 300.00 CNY" in msgs[0] and "Remaining balance: 900.00" in msgs[0]
    row = await eventually(case.row, lambda r: r is not None and r["paid_total"] == D("300"))
    assert row["outstanding"] == D("900.00")
    await case.finish()


async def test_partial_then_full_payment(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10)
    await case.pay("p1", "500.00")
    ack = (await case.wait_messages(1, "sms"))[0]
    assert "We received 500.00 CNY" in ack and "Remaining balance: 700.00 CNY" in ack
    st = await case.status()
    assert (st.state, st.outstanding, st.paid_total) == (CaseState.ACTIVE, D("700.00"), D("500.00"))
    assert (st.fees, st.interest, st.principal) == (D("0"), D("0"), D("700.00"))

    await case.pay("p2", "700.00")
    result = await case.handle.result()
    assert (result.state, result.outstanding, result.paid_total, result.excess) == (
        CaseState.PAID, D("0"), D("1200.00"), D("0"))
    assert result.close_reason == "paid in full"
    sms = await case.wait_messages(2, "sms")
    assert len(sms) == 2 and "paid in full" in sms[1] and "overpayment" not in sms[1]
    emails = await case.wait_messages(1, "email")
    assert len(emails) == 1 and "paid in full" in emails[0]
    assert await case.payments() == [
        ("p1", D("500.00"), {"fees": "50.00", "interest": "150.00", "principal": "300.00"}),
        ("p2", D("700.00"), {"principal": "700.00"}),
    ]
    rows = await case.events()
    assert [r["kind"] for r in rows if r["kind"] in ("payment", "case_closed")] == ["payment",
        "payment", "case_closed"]
    assert all(r["actor"] == "loan-system" for r in rows if r["kind"] == "payment")
    row = await case.row()
    assert (row["state"], row["outstanding"], row["paid_total"]) == ("paid", D("0"), D("1200.00"))
    assert row["closed_at"] is not None and row["close_reason"] == "paid in full"


async def test_overpayment_closes_and_records_the_excess(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10)
    await case.pay("big", "1250.00")
    result = await case.handle.result()
    assert (result.state, result.outstanding, result.excess) == (CaseState.PAID, D("0"), D("50.00"))
    assert result.close_reason == "paid in full with 50.00 excess"
    assert await case.payments() == [("big", D("1250.00"), {
        "fees": "50.00", "interest": "150.00", "principal": "1000.00", "excess": "50.00"})]
    sms = await case.wait_messages(1, "sms")
    assert "paid in full" in sms[0] and "overpayment of 50.00 CNY will be refunded" in sms[0]
    email = (await case.wait_messages(1, "email"))[0]
    assert "overpayment of 50.00 CNY" in email
    closed = await case.events("case_closed")
    assert len(closed) == 1 and "50.00 excess" in closed[0]["summary"]
    assert (await case.row())["state"] == "paid"


async def test_payment_is_allocated_in_the_policys_order(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10)
    await case.pay("p1", "120.00")
    rows = await case.wait_events("payment")
    st = await case.status()
    assert (st.fees, st.interest, st.principal, st.outstanding) == (D("0"), D("80.00"), D(
        "1000.00"), D("1080.00"))
    assert await case.payments() == [("p1", D("120.00"), {"fees": "50.00", "interest": "70.00"})]
    assert rows[0]["actor"] == "loan-system" and rows[0]["occurred_at"] is not None
    assert json.loads(rows[0]["detail"])["allocation"] == {"fees": "50.00", "interest": "70.00"}
    ack = (await case.wait_messages(1, "sms"))[0]
    assert "We received 120.00 CNY" in ack and "Remaining balance: 1,080.00 CNY" in ack
    await case.finish()


async def test_payment_order_is_the_policys_own(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10, payment_order=["principal", "interest",
            "fees"])
    await case.pay("p1", "1050.00")
    await case.wait_events("payment")
    st = await case.status()
    assert (st.principal, st.interest, st.fees) == (D("0"), D("100.00"), D("50.00"))
    assert await case.payments() == [("p1", D("1050.00"), {"principal": "1000.00",
        "interest": "50.00"})]
    await case.finish()


async def test_waiver_of_interest_then_full_payment_of_the_rest(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=10)
    res = await case.update(CollectionWorkflow.waive, WaiverInput(
        agent="agent-7", component="interest", amount=D(
                "100.00"), currency="CNY", reason="goodwill"))
    assert res.accepted and res.outstanding == D("1100.00")
    st = await case.status()
    assert (st.interest, st.fees, st.principal, st.assigned_agent) == (D("50.00"), D("50.00"), D(
        "1000.00"), "agent-7")
    res = await case.update(CollectionWorkflow.waive, WaiverInput(
        agent="agent-7", component="fees", amount=D("20.00"), currency="CNY"))
    assert res.outstanding == D("1080.00") and (await case.status()).fees == D("30.00")

    assert "only interest or fees" in await case.refused(CollectionWorkflow.waive, WaiverInput(
        agent="agent-7", component="principal", amount=D("1.00"), currency="CNY"))
    assert "50.00 outstanding" in await case.refused(CollectionWorkflow.waive, WaiverInput(
        agent="agent-7", component="interest", amount=D("60.00"), currency="CNY"))

    await case.pay("rest", "1080.00")
    result = await case.handle.result()
    assert (result.state, result.outstanding, result.paid_total, result.excess) == (
        CaseState.PAID, D("0"), D("1080.00"), D("0"))
    assert await case.payments() == [("rest", D("1080.00"), {
        "fees": "30.00", "interest": "50.00", "principal": "1000.00"})]
    waivers = await case.events("waiver")
    assert [(r["actor"], json.loads(r["detail"])["component"], json.loads(r["detail"])["amount"])
            for r in waivers] == [("agent-7", "interest", "100.00"), ("agent-7", "fees", "20.00")]
    assert "goodwill" in waivers[0]["detail"]
    receipt = (await case.wait_messages(1, "sms"))[-1]
    assert "paid in full" in receipt


# ----------------------------------------------------------------------------------- promises


def promise(amount: str, by: date, currency: str = "CNY", agent: str = "agent-1") -> PromiseInput:
    return PromiseInput(agent=agent, amount=D(amount), currency=currency, promised_date=by)


async def test_promise_kept_then_the_ladder_resumes(stack: Stack, loan_id: str) -> None:
    # D+2: the D+1 SMS goes out at once
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    now = case.now
    today = case.today

    res = await case.update(CollectionWorkflow.promise,
                            promise("400.00", today + timedelta(days=5)))
    assert res.accepted and "escalation paused" in res.message
    confirmation = (await case.wait_messages(2, "sms"))[1]
    assert "promise to pay 400.00 CNY" in confirmation and (today + timedelta(days=5)).isoformat(
        ) in confirmation
    st = await case.status()
    assert st.promise is not None and st.promise["amount"] == "400.00"
    assert st.next_action == "paused: open promise to pay"
    assert st.assigned_agent == "agent-1"

    await case.sleep(timedelta(days=2))  # early-reminder (D+3) falls due while paused
    rows = await case.wait_sent(lambda r: len(r) == 2)
    assert [r["template"] for r in rows] == ["early_reminder", "promise_confirmation"]

    await case.pay("p1", "400.00")
    kept = await case.wait_events("promise_kept")
    assert kept[0]["actor"] == "agent-1" and "400.00 paid" in kept[0]["summary"]
    # The ladder resumes at once: the step that fell due during the promise runs now.
    rows = await case.wait_sent(lambda r: len(r) >= 5)
    assert [(r["template"], r["channel"]) for r in rows] == [
        ("early_reminder", "sms"), ("promise_confirmation", "sms"), ("payment_ack", "sms"),
        ("early_reminder", "sms"), ("early_reminder", "email")] or sorted(
        (r["template"], r["channel"]) for r in rows[2:]) == [
        ("early_reminder", "email"), ("early_reminder", "sms"), ("payment_ack", "sms")]
    assert all(r["occurred_at"] >= now + timedelta(days=2) for r in rows[2:])
    st = await case.status()
    assert st.promise is None and st.outstanding == D("800.00")
    assert st.next_action is not None and st.next_action.startswith("early-call")
    promised = await case.events("promise")
    assert promised[0]["actor"] == "agent-1" and near(promised[0]["occurred_at"], now)
    await case.finish()


async def test_promise_of_the_whole_balance_kept_by_payment_in_full(
    stack: Stack, loan_id: str,
) -> None:
    case = await open_case(stack, loan_id, due_in=10)
    today = case.today
    await case.update(CollectionWorkflow.promise, promise("1200.00", today + timedelta(days=3)))
    await case.sleep(timedelta(days=1))
    await case.pay("all", "1200.00")
    result = await case.handle.result()
    assert result.state == CaseState.PAID
    assert "promise_kept" in await case.kinds()
    kinds_in_db = [r["kind"] for r in await case.events()]
    assert kinds_in_db.index("promise_kept") < kinds_in_db.index("case_closed")
    assert not [k for k in kinds_in_db if k == "promise_broken"]


async def test_promise_broken_and_escalation_resumed(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    today = case.today
    await case.update(CollectionWorkflow.promise, promise("400.00", today + timedelta(days=3)))

    # Broken at the end of the grace days (promised date + 2): midnight local starting day T+6.
    await case.sleep(timedelta(days=5, hours=13))  # T+5 23:00 local
    assert [r["template"] for r in await case.sent()] == ["early_reminder", "promise_confirmation"]
    assert (await case.status()).promise is not None
    await case.sleep(timedelta(hours=10))  # T+6 09:00 local
    broken = await case.wait_events("promise_broken")
    assert broken[0]["actor"] == "agent-1" and "broken promises: 1" in broken[0]["summary"]
    assert near(broken[0]["occurred_at"], utc_at(today + timedelta(days=6), 0))
    # One broken promise: the ladder resumes where time has brought it (firm reminder, D+7), at
    # the start of the contact window; no extra escalation yet.
    rows = await case.wait_sent(lambda r: len(r) == 4)
    assert [r["template"] for r in rows[2:]] == ["firm_reminder"] * 2
    assert all(near(r["occurred_at"], utc_at(today + timedelta(days=6), 8)) for r in rows[2:])
    st = await case.status()
    assert st.promise is None and st.stage == Stage.MIDDLE
    assert "escalated" not in await case.kinds()
    assert any(t.startswith("Action needed") for t in case.texts("email"))

    # A second broken promise escalates to the next stage at once (late notice, due at D+30).
    await case.update(CollectionWorkflow.promise, promise("300.00", today + timedelta(days=7)))
    await case.sleep(timedelta(days=4))  # T+10 09:00: broken at T+10 00:00
    broken = await case.wait_events("promise_broken", 2)
    assert "broken promises: 2" in broken[1]["summary"]
    escalated = await case.wait_events("escalated")
    assert "to late: 2 broken promises" in escalated[0]["summary"]
    rows = await case.wait_sent(lambda r: len(r) == 7)
    assert [r["template"] for r in rows[5:]] == ["late_notice"] * 2
    assert all(near(r["occurred_at"], utc_at(today + timedelta(days=10), 8)) for r in rows[5:])
    st = await case.status()
    assert st.stage == Stage.LATE and st.days_past_due == 12
    skipped = {r["summary"].split()[1] for r in await case.events("step_skipped")
               if "escalated" in r["summary"]}
    assert {"middle-call-1", "middle-call-2", "formal-notice", "middle-call-3",
        "middle-call-4"} <= skipped
    await case.finish()


async def test_each_refusal_of_the_promise_validator(stack: Stack, loan_id: str) -> None:
    # After the contact window: the receipt will wait for 08:00.
    case = await open_case(stack, loan_id, due_in=10, hour=23)
    today = case.today
    P = CollectionWorkflow.promise
    reasons = [
        await case.refused(P, promise("100.00", today - timedelta(days=1))),
        await case.refused(P, promise("100.00", today + timedelta(days=15))),
        await case.refused(P, promise("0", today + timedelta(days=1))),
        await case.refused(P, promise("-5.00", today + timedelta(days=1))),
        await case.refused(P, promise("1200.01", today + timedelta(days=1))),
        await case.refused(P, promise("100.00", today + timedelta(days=1), currency="USD")),
        await case.refused(P, promise("100.00", today + timedelta(days=1), agent=" ")),
    ]
    assert reasons == [
        f"promised date {today - timedelta(days=1)} is in the past (today is {today})",
        f"promised date {today + timedelta(days=15)} is beyond the policy's horizon of 14 days "
        f"({today + timedelta(days=14)})",
        "promised amount must be positive, got 0",
        "promised amount must be positive, got -5.00",
        "promised amount 1200.01 exceeds the balance 1200.00",
        "promised currency USD differs from the loan's CNY",
        "agent is required",
    ]
    # The edges are accepted: today, the horizon's last day, the whole balance.
    for by in (today, today + timedelta(days=14)):
        assert (await case.update(P, promise("1200.00", by))).accepted
    st = await case.status()
    assert st.promise is not None
    assert st.promise["promised_date"] == (today + timedelta(days=14)).isoformat()
    assert [k for k in await case.kinds() if k.startswith("promise")] == ["promise",
        "promise_cancelled", "promise"]

    # Paid in full at night: the case is closed while its receipt waits for the window.
    await case.pay("p1", "1200.00")
    await eventually(lambda: case.status(), lambda s: s.state == CaseState.PAID)
    assert await case.refused(P, promise("100.00", today + timedelta(days=1))) == \
        "case is closed (paid: paid in full)"
    result = await case.handle.result()
    assert result.state == CaseState.PAID
    rows = await case.sent()
    receipts = [r for r in rows if r["template"] == "payment_receipt"]
    assert len(receipts) == 2
    assert all(near(r["occurred_at"], utc_at(today + timedelta(days=1), 8)) for r in receipts)
    assert [r["kind"] for r in await case.events() if r["kind"].startswith("promise")] == [
        "promise", "promise_cancelled", "promise", "promise_kept"]


# --------------------------------------------------------------------------------------- plans


def plan(*installments: tuple[str, date], agent: str = "agent-2") -> PlanInput:
    return PlanInput(agent=agent, currency="CNY",
                     installments=[Installment(amount=D(a), due_date=d) for a, d in installments])


async def test_installment_plan_completed(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    now = case.now
    today = case.today
    days = [today + timedelta(days=n) for n in (3, 10, 17)]
    assert "add up to 1000.00" in await case.refused(CollectionWorkflow.plan, plan(
        ("500.00", days[0]), ("500.00", days[1])))
    assert "strictly increasing" in await case.refused(CollectionWorkflow.plan, plan(
        ("600.00", days[1]), ("600.00", days[0])))
    res = await case.update(CollectionWorkflow.plan, plan(*(("400.00", d) for d in days)))
    assert res.accepted and "3 installments" in res.message
    st = await case.status()
    assert st.plan is not None and st.next_action == "paused: active installment plan"

    # Each installment: a reminder two days before its due date (10:00 local), then the payment.
    for n, due in enumerate(days, 1):
        await case.sleep_until(utc_at(due - timedelta(days=1), 10))
        reminders = [t for t in case.texts() if "installment of 400.00 CNY" in t
                     or "Installment reminder: 400.00 CNY" in t]
        assert len(reminders) == 2 * n, reminders
        assert all(due.isoformat() in t for t in reminders[-2:])
        await case.pay(f"i{n}", "400.00")
        if n < 3:
            await case.wait_events("installment_paid", n)

    result = await case.handle.result()
    assert (result.state, result.paid_total, result.outstanding) == (
        CaseState.PAID, D("1200.00"), D("0"))
    rows = await case.events()
    kinds_in_db = [r["kind"] for r in rows]
    assert kinds_in_db.count("installment_paid") == 3 and kinds_in_db.count("plan_completed") == 1
    assert kinds_in_db.index("plan_completed") < kinds_in_db.index("case_closed")
    assert "plan_broken" not in kinds_in_db
    plan_row = next(r for r in rows if r["kind"] == "plan")
    assert plan_row["actor"] == "agent-2" and near(plan_row["occurred_at"], now)
    assert [i["due_date"] for i in json.loads(plan_row["detail"])["installments"]] == [d.isoformat(
        ) for d in days]
    assert next(r for r in rows if r["kind"] == "plan_completed")["actor"] == "agent-2"
    assert [p[0] for p in await case.payments()] == ["i1", "i2", "i3"]
    # Nothing from the ladder while the plan ran: only the first SMS, reminders, acks, receipt.
    templates = [r["template"] for r in await case.sent()]
    assert templates.count("early_reminder") == 1 and templates[0] == "early_reminder"
    assert sorted(set(templates)) == ["early_reminder", "installment_reminder", "payment_ack",
        "payment_receipt"]
    assert templates.count("installment_reminder") == 6 and templates.count("payment_ack") == 2


async def test_installment_plan_broken_by_a_missed_payment(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    today = case.today
    await case.update(CollectionWorkflow.plan, plan(
        ("600.00", today + timedelta(days=3)), ("600.00", today + timedelta(days=10))))
    await case.sleep(timedelta(days=2))
    await case.pay("i1", "600.00")
    await case.wait_events("installment_paid")

    # The second installment (due T+10) is missed: grace of 3 days, broken at T+14 00:00 local.
    await case.sleep_until(utc_at(today + timedelta(days=13), 23))
    assert (await case.status()).plan is not None
    templates = [r["template"] for r in await case.sent()]
    assert templates == ["early_reminder", "installment_reminder", "installment_reminder",
        "payment_ack",
                         "installment_reminder", "installment_reminder"], templates
    await case.sleep(timedelta(hours=10))  # T+14 09:00 local
    broken = await case.wait_events("plan_broken")
    assert broken[0]["actor"] == "agent-2" and "installment 2" in broken[0]["summary"]
    assert near(broken[0]["occurred_at"], utc_at(today + timedelta(days=14), 0))
    # Escalation resumes: the latest step due by now (formal notice, D+14) at 08:00.
    rows = await case.wait_sent(lambda r: len(r) == 7)
    assert rows[-1]["template"] == "formal_notice" and rows[-1]["channel"] == "email"
    assert near(rows[-1]["occurred_at"], utc_at(today + timedelta(days=14), 8))
    st = await case.status()
    assert st.plan is None and st.stage == Stage.MIDDLE and st.outstanding == D("600.00")
    await case.finish()


# ------------------------------------------------------------ extension, waiver, settlement


async def test_extension_moves_the_due_date_and_the_ladder(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    today, due = case.today, case.loan.due_date
    assert "is not after the current one" in await case.refused(
        CollectionWorkflow.extend, ExtensionInput(agent="agent-3", new_due_date=due))
    assert "maximum extension of 60 days" in await case.refused(
        CollectionWorkflow.extend,
        ExtensionInput(agent="agent-3", new_due_date=due + timedelta(days=61)))
    new_due = today + timedelta(days=10)
    res = await case.update(CollectionWorkflow.extend, ExtensionInput(
        agent="agent-3", new_due_date=new_due, reason="salary delayed"))
    assert res.accepted and new_due.isoformat() in res.message
    st = await case.status()
    assert st.days_past_due == -10 and st.assigned_agent == "agent-3"
    # The next step (early reminder, D+3) now counts from the new due date.
    assert st.next_action == "early-reminder (message)"
    assert st.next_action_at == utc_at(new_due + timedelta(days=3), 10)
    ext = await case.wait_events("extension")
    assert ext[0]["actor"] == "agent-3" and json.loads(ext[0]["detail"]) == {
        "reason": "salary delayed"}
    row = await eventually(lambda: case.row(), lambda r: r["due_date"] == new_due)
    assert row["days_past_due"] == -10

    await case.sleep(timedelta(days=12, hours=23))  # T+12 09:00: nothing sent in between
    assert len(await case.sent()) == 1
    await case.sleep(timedelta(days=1, hours=2))  # T+13 11:00: D'+3 10:00 passed
    rows = await case.wait_sent(lambda r: len(r) == 3)
    assert [r["template"] for r in rows[1:]] == ["early_reminder"] * 2
    assert all(near(r["occurred_at"], utc_at(new_due + timedelta(days=3), 10)) for r in rows[1:])
    assert f"due on {new_due.isoformat()}" in case.texts("email")[-1]
    await case.finish()


async def test_settlement_paid_closes_as_settled(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    today = case.today
    by = today + timedelta(days=5)
    S = CollectionWorkflow.settle
    assert "below the policy's floor of 600.00" in await case.refused(S, SettlementInput(
        agent="agent-4", amount=D("599.99"), currency="CNY", pay_by=by))
    assert "must be below the balance 1200.00" in await case.refused(S, SettlementInput(
        agent="agent-4", amount=D("1200.00"), currency="CNY", pay_by=by))
    assert "beyond the policy's horizon" in await case.refused(S, SettlementInput(
        agent="agent-4", amount=D("700.00"), currency="CNY", pay_by=today + timedelta(days=15)))
    res = await case.update(S, SettlementInput(agent="agent-4", amount=D("700.00"), currency="CNY",
                                               pay_by=by))
    assert res.accepted
    st = await case.status()
    assert st.settlement is not None and st.next_action == "paused: open settlement offer"

    await case.sleep(timedelta(days=2))
    await case.pay("s1", "300.00")
    await case.wait_messages(2, "sms")
    assert (await case.status()).state == CaseState.ACTIVE
    await case.pay("s2", "400.00")
    result = await case.handle.result()
    assert (result.state, result.paid_total, result.close_reason) == (CaseState.SETTLED, D(
        "700.00"), "settled")
    kinds_in_db = [r["kind"] for r in await case.events()]
    assert [k for k in kinds_in_db if k in ("settlement", "payment", "settled", "case_closed")] == [
        "settlement", "payment", "payment", "settled", "case_closed"]
    settled = await case.events("settled")
    assert settled[0]["actor"] == "agent-4" and "remaining 500.00 waived" in settled[0]["summary"]
    row = await case.row()
    assert (row["state"], row["paid_total"], row["close_reason"]) == ("settled", D("700.00"),
        "settled")
    assert result.outstanding == D("0") and row["outstanding"] == D("0")  # the remainder is waived
    templates = [r["template"] for r in await case.sent()]
    assert templates == ["early_reminder", "payment_ack", "settlement_receipt",
        "settlement_receipt"]
    assert "agreed settlement" in case.texts("sms")[-1]
    assert [p[0] for p in await case.payments()] == ["s1", "s2"]


# --------------------------------------------------------------------------------------- holds


async def test_dispute_hold_and_its_resolution(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    now = case.now
    today = case.today
    assert await case.refused(
        CollectionWorkflow.resolve, ResolveHoldInput(actor="agent-5")) == "case is not on hold"
    res = await case.update(CollectionWorkflow.hold, HoldInput(
        actor="agent-5", kind="dispute", reason="borrower disputes the fees"))
    assert res.accepted and (today + timedelta(days=30)).isoformat() in res.message
    assert "already on a dispute hold" in await case.refused(CollectionWorkflow.hold, HoldInput(
        actor="agent-5", kind="hardship"))
    st = await case.status()
    assert st.hold is not None and st.hold[
        "kind"] == "dispute" and st.next_action == "paused: dispute hold"

    await case.sleep(timedelta(days=5))  # early reminder, call and firm reminder fall due on hold
    assert len(await case.sent()) == 1 and len(case.texts()) == 1
    assert not await case.pool.fetch("SELECT 1 FROM tasks WHERE loan_id = $1", case.loan.loan_id)

    res = await case.update(CollectionWorkflow.resolve, ResolveHoldInput(
        actor="agent-6", resolution="upheld", reason="fees confirmed"))
    assert res.accepted and "contact resumes" in res.message
    rows = await case.wait_sent(lambda r: len(r) == 3)
    assert [r["template"] for r in rows[1:]] == ["firm_reminder"] * 2
    assert all(r["occurred_at"] >= now + timedelta(days=5) for r in rows[1:])
    assert (await case.status()).hold is None
    hold_rows = await case.events("hold")
    assert hold_rows[0]["actor"] == "agent-5" and json.loads(hold_rows[0]["detail"]) == {
        "reason": "borrower disputes the fees"}
    resolved = await case.wait_events("hold_resolved")
    assert resolved[0]["actor"] == "agent-6" and "upheld" in resolved[0]["summary"]
    await case.finish()


async def test_hardship_hold_lapses_at_its_review_date(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    today = case.today
    review = today + timedelta(days=6)
    assert "must be after today" in await case.refused(CollectionWorkflow.hold, HoldInput(
        actor="agent-5", kind="hardship", review_by=today))
    await case.update(CollectionWorkflow.hold, HoldInput(
        actor="agent-5", kind="hardship", reason="lost job", review_by=review))
    await case.sleep_until(utc_at(review, 7))  # review day, 07:00 local
    assert len(await case.sent()) == 1 and len(case.texts()) == 1
    lapsed = await case.wait_events("hold_lapsed")
    assert near(lapsed[0]["occurred_at"], utc_at(review, 0)) and review.isoformat() in lapsed[0][
        "summary"]
    assert (await case.status()).hold is None
    await case.sleep(timedelta(hours=2))  # 09:00: the window opened at 08:00
    rows = await case.wait_sent(lambda r: len(r) == 3)
    assert [r["template"] for r in rows[1:]] == ["firm_reminder"] * 2
    assert all(near(r["occurred_at"], utc_at(review, 8)) for r in rows[1:])
    assert len(case.texts()) == 3
    await case.finish()


# ------------------------------------------------------------------------- close and cease


async def test_close_for_bankruptcy_ends_the_case_and_contact(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    assert "close reason must be one of" in await case.refused(CollectionWorkflow.close, CloseInput(
        actor="legal-1", reason="moved abroad"))
    res = await case.update(CollectionWorkflow.close,
                            CloseInput(actor="legal-1", reason="bankruptcy"))
    assert res.accepted
    result = await case.handle.result()
    assert (result.state, result.stage, result.close_reason) == (CaseState.CLOSED, Stage.CLOSED,
        "bankruptcy")
    assert result.outstanding == D("1200.00")
    await case.sleep(timedelta(days=20))
    assert len(case.texts()) == 1 and len(await case.sent()) == 1
    closed = await case.events("case_closed")
    assert len(closed) == 1 and "bankruptcy" in closed[0]["summary"] and closed[0][
        "actor"] == "legal-1"
    row = await case.row()
    assert (row["state"], row["stage"], row["close_reason"]) == ("closed", "closed", "bankruptcy")
    stages = await case.pool.fetch(
            "SELECT to_stage FROM stage_history WHERE loan_id = $1 ORDER BY id", case.loan.loan_id)
    assert [r["to_stage"] for r in stages][-1] == "closed"


async def test_cease_stops_ladder_messages(stack: Stack, loan_id: str) -> None:
    case = await open_case(stack, loan_id, due_in=-2, first_message=True)
    res = await case.update(CollectionWorkflow.cease,
                            CeaseInput(actor="agent-8", reason="written request"))
    assert res.accepted
    assert await case.refused(CollectionWorkflow.cease, CeaseInput(actor="agent-8")) == \
        "contact has already ceased for this case"
    assert (await case.status()).ceased

    await case.sleep(timedelta(days=31))  # D+33: every ladder step to the late notice
    assert len(case.texts()) == 1
    assert [r["template"] for r in await case.sent()] == ["early_reminder"]
    skipped = await case.pool.fetch(
        "SELECT step_id, channel, rule FROM contacts WHERE loan_id = $1 AND decision = 'skipped'",
        case.loan.loan_id)
    assert {r["rule"] for r in skipped} == {"cn.cease_communication"}
    assert {"late-notice", "firm-reminder"} <= {r["step_id"] for r in skipped}
    assert not await case.pool.fetch("SELECT 1 FROM tasks WHERE loan_id = $1", case.loan.loan_id)
    # Payment acknowledgements are not among the notices a cease request allows.
    await case.pay("p1", "100.00")
    await case.wait_events("payment")

    # The agency placement (D+35) carries a remedy notice, which a cease request still allows.
    await case.sleep(timedelta(days=3))
    rows = await case.wait_sent(lambda r: len(r) == 2)
    assert [(r["template"], r["channel"]) for r in rows] == [
        ("early_reminder", "sms"), ("agency_placement_notice", "email")]
    assert len(case.texts("sms")) == 1
    cease = await case.events("cease")
    assert cease[0]["actor"] == "agent-8" and "written request" in cease[0]["summary"]
    await case.finish()


# ------------------------------------------------------------------ races and continue-as-new


async def test_payment_racing_the_first_start(stack: Stack, loan_id: str) -> None:
    """The loan system's payment arrives as the case opens: signal-with-start applies it once the
    policy (and its payment order) is resolved, never before and never twice."""
    loan, now, today = await new_loan(stack, loan_id, due_in=10)
    # Started by type name, as `tests.helpers.start_case` does (the run method takes CaseInput).
    handle = await stack.env.client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan), id=workflow_id_for(loan.loan_id),
        task_queue=stack.task_queue, start_signal="pay", start_signal_args=[pay("p0", "120.00")],
        result_type=CaseResult,
    )
    case = Case(stack, loan, handle, now, today)
    await case.wait_events("payment")
    st = await case.status()
    assert (st.paid_total, st.fees, st.interest, st.outstanding) == (D("120.00"), D("0"), D(
        "80.00"), D("1080.00"))
    assert st.policy_name == "default" and st.segment == "standard"
    timeline = await case.kinds()
    assert timeline.index("case_opened") < timeline.index("payment") and timeline.count(
        "payment") == 1
    assert await case.payments() == [("p0", D("120.00"), {"fees": "50.00", "interest": "70.00"})]
    assert "We received 120.00 CNY" in (await case.wait_messages(1, "sms"))[0]
    await case.finish()


async def test_signal_with_start_then_a_normal_start_of_the_same_case(
    stack: Stack, loan_id: str,
) -> None:
    loan, now, today = await new_loan(stack, loan_id, due_in=10)
    client, wid, queue = stack.env.client, workflow_id_for(loan.loan_id), stack.task_queue
    first = await client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan, policy=pinned(loan)), id=wid,
        task_queue=queue, start_signal="pay", start_signal_args=[pay("p0", "300.00")],
        result_type=CaseResult,
    )
    # The case-opening job starts the same loan afterwards: it attaches to the running case.
    second = await client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan), id=wid, task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, result_type=CaseResult,
    )
    assert second.result_run_id == first.result_run_id
    # The loan system retries its signal-with-start: the payment is not applied again.
    again = await client.start_workflow(
        WORKFLOW_TYPE, CollectionInput(loan=loan), id=wid, task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="pay", start_signal_args=[pay("p0", "300.00")], result_type=CaseResult,
    )
    assert again.result_run_id == first.result_run_id
    case = Case(stack, loan, second, now, today)
    await case.wait_events("payment")
    await case.wait_messages(1)
    await settle_down()
    st = await case.status()
    assert (st.paid_total, st.outstanding, st.run_count) == (D("300.00"), D("900.00"), 1)
    assert (await case.kinds()).count("payment") == 1 and (await case.kinds()).count(
        "case_opened") == 1
    assert [p[0] for p in await case.payments()] == ["p0"]
    assert len(await case.events("case_opened")) == 1
    assert len(case.texts()) == 1
    await case.finish()


async def test_continue_as_new_loses_nothing_at_the_boundary(stack: Stack, loan_id: str) -> None:
    limit = 40
    case = await open_case(stack, loan_id, due_in=20, max_history_events=limit)
    today = case.today
    wid = workflow_id_for(case.loan.loan_id)
    paid: list[str] = []
    notices = 0  # messages sent besides the acknowledgements

    async def pay_and_wait(pid: str, resend: str | None = None) -> None:
        await case.pay(pid, "50.00")
        if resend:
            await case.pay(resend, "50.00")  # a duplicate, maybe in another run
        paid.append(pid)
        await eventually(lambda: case.events("payment"), lambda r: len(r) == len(paid))
        await case.wait_sent(lambda r: len(r) == len(paid) + notices)

    # Daytime payments over several days, with resends and a promise: runs continue as new.
    for n in range(6):
        await pay_and_wait(f"d{n}", resend=f"d{n - 1}" if n else None)
        if n == 2:
            await case.update(CollectionWorkflow.promise,
                              promise("100.00", today + timedelta(days=10)))
            notices += 1
        await case.sleep(timedelta(days=1))
    assert (await case.status()).run_count > 1

    # Arm the boundary: the current run's history is past the limit, so the next wake ends it.
    # Resends of the last payment grow the history without waking the run (a repeated payment id
    # is ignored), so the run cannot continue as new before it is armed.
    async def armed() -> bool:
        desc = await case.handle.describe()
        return desc.history_length > limit + 5
    resends = 0
    while not await armed():
        await case.pay(paid[-1], "50.00")
        resends += 1
        assert resends < 30
    armed_run = (await case.handle.describe()).run_id

    # At night: n1 wakes the run, which decides to continue as new but first owes n1's
    # acknowledgement, which waits for the contact window (08:00). n2 and a resend of n1 arrive
    # during that wait, at the boundary, in the run that is ending.
    await case.sleep_until(utc_at(today + timedelta(days=6), 23))
    await case.pay("n1", "50.00")
    await eventually(lambda: case.events("payment"), lambda r: len(r) == len(paid) + 1)
    await case.pay("n2", "50.00")
    await case.pay("n1", "50.00")
    paid += ["n1", "n2"]
    # Applied at once (the recorder writes n2 once the pending acknowledgement has gone out).
    await eventually(lambda: case.status(), lambda st: st.paid_total == D("50.00") * len(paid))
    assert (await case.handle.describe()).run_id == armed_run  # still the run that is ending
    await case.sleep(timedelta(hours=10))  # 09:00: acknowledgements sent, run continued as new
    new_run = await eventually(lambda: case.handle.describe(), lambda d: d.run_id != armed_run)
    assert new_run.status == WorkflowExecutionStatus.RUNNING

    old = await stack.env.client.get_workflow_handle(wid, run_id=armed_run).fetch_history()
    signalled = [json.loads(e.workflow_execution_signaled_event_attributes.input.payloads[0].data)[
            "payment_id"]
                 for e in old.events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signalled[-3:] == ["n1", "n2", "n1"]
    assert old.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")

    # Nothing lost, nothing doubled: state, timeline and PostgreSQL agree.
    total = D("50.00") * len(paid)
    st = await case.status()
    assert (st.paid_total, st.outstanding) == (total, D("1200.00") - total)
    assert st.promise is None  # kept by the payments after it
    timeline = await case.handle.query(CollectionWorkflow.timeline)
    applied = [e.detail["payment_id"] for e in timeline if e.kind == "payment"]
    assert sorted(applied) == sorted(paid) and len(set(applied)) == len(applied)
    rows = await case.payments()
    assert sorted(r[0] for r in rows) == sorted(paid) and sum(r[1] for r in rows) == total
    db_events = await eventually(lambda: case.events(), lambda r: len(r) >= len(timeline))
    assert len(db_events) == len(timeline)
    assert sorted(json.loads(r["detail"])["payment_id"] for r in db_events if r[
        "kind"] == "payment") == sorted(paid)
    assert [r["kind"] for r in db_events].count("promise_kept") == 1
    acks = await case.wait_sent(lambda r: len(r) == len(paid) + 1)
    assert sorted(r["template"] for r in acks) == ["payment_ack"] * len(paid) + [
        "promise_confirmation"]
    assert len(case.texts()) == len(paid) + 1

    await case.handle.signal(CollectionWorkflow.pay, pay("last", str(D("1200.00") - total)))
    result = await case.handle.result()
    assert (result.state, result.paid_total, result.outstanding) == (
        CaseState.PAID, D("1200.00"), D("0"))
    assert len(await case.payments()) == len(paid) + 1
    assert (await case.row())["paid_total"] == D("1200.00")
