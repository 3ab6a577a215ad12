"""The refusal checks of negotiation.py without Temporal: each reason, and the edges accepted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts.messages import (
    CaseState,
    CloseInput,
    ExtensionInput,
    HoldInput,
    Installment,
    PlanInput,
    PromiseInput,
    SettlementInput,
    WaiverInput,
)
from tests.helpers import make_loan, pinned
from workflows import negotiation
from workflows.case_state import CaseData, HoldState
from workflows.ledger import balance_of

D = Decimal
TODAY = date(2026, 3, 10)
DUE = TODAY - timedelta(days=5)
_POLICY = pinned(make_loan("R1", DUE))


def case(**changes: Any) -> CaseData:
    loan = make_loan("R1", DUE)
    b = balance_of(loan.amount_overdue, loan.interest, loan.fees)
    at = datetime(2026, 3, 5, tzinfo=UTC)
    c = CaseData(loan=loan, policy=_POLICY, clock_origin=at, opened_at=at, due_date=DUE,
                 principal=b.principal, interest=b.interest, fees=b.fees, borrower_key="p:x")
    return replace(c, **changes)


def refusal(check: Any, *args: Any) -> str:
    with pytest.raises(negotiation.Refusal) as info:
        check(*args)
    return str(info.value)


def promise(amount: str = "100.00", by: date = TODAY + timedelta(days=3), currency: str = "CNY",
            agent: str = "a1") -> PromiseInput:
    return PromiseInput(agent=agent, amount=D(amount), currency=currency, promised_date=by)


# --------------------------------------------------------------------------------- promises


@pytest.mark.parametrize("p, reason", [
    (promise(by=TODAY - timedelta(days=1)),
     "promised date 2026-03-09 is in the past (today is 2026-03-10)"),
    (promise(by=TODAY + timedelta(days=15)),
     "promised date 2026-03-25 is beyond the policy's horizon of 14 days (2026-03-24)"),
    (promise("0"), "promised amount must be positive, got 0"),
    (promise("-1.00"), "promised amount must be positive, got -1.00"),
    (promise("NaN"), "promised amount must be positive, got NaN"),
    (promise("Infinity"), "promised amount must be positive, got Infinity"),
    (promise("10.001"), "promised amount has more than 2 decimal places: 10.001"),
    (promise("1E+30"), "promised amount is out of range: 1E+30"),
    (promise("1200.01"), "promised amount 1200.01 exceeds the balance 1200.00"),
    (promise(currency="USD"), "promised currency USD differs from the loan's CNY"),
    (promise(agent="  "), "agent is required"),
])
def test_promise_refusals(p, reason):
    assert refusal(negotiation.check_promise, case(), p, TODAY) == reason


def test_promise_refused_on_a_closed_case():
    closed = case(state=CaseState.CLOSED, close_reason="bankruptcy")
    assert refusal(negotiation.check_promise, closed, promise(), TODAY) == \
        "case is closed (closed: bankruptcy)"
    paid = case(state=CaseState.PAID)
    assert refusal(negotiation.check_promise, paid, promise(), TODAY) == "case is closed (paid)"


@pytest.mark.parametrize("p", [
    promise(by=TODAY), promise(by=TODAY + timedelta(days=14)), promise("1200.00"), promise("0.01"),
    promise("100.0"),  # trailing zeros are the same amount
])
def test_promise_edges_accepted(p):
    negotiation.check_promise(case(), p, TODAY)


def test_promise_horizon_is_the_policys():
    c = case(policy=pinned(make_loan("R1", DUE), promise_max_days=3))
    negotiation.check_promise(c, promise(by=TODAY + timedelta(days=3)), TODAY)
    assert "horizon of 3 days" in refusal(
        negotiation.check_promise, c, promise(by=TODAY + timedelta(days=4)), TODAY)


def test_promise_checks_the_balance_after_payments():
    c = case(principal=D("100.00"), interest=D("0"), fees=D("0"))
    assert refusal(negotiation.check_promise, c, promise("100.01"), TODAY) == \
        "promised amount 100.01 exceeds the balance 100.00"


# ------------------------------------------------------------------------------------ plans


def plan(*parts: tuple[str, int], currency: str = "CNY", agent: str = "a1") -> PlanInput:
    return PlanInput(agent=agent, currency=currency, installments=[
        Installment(amount=D(a), due_date=TODAY + timedelta(days=d)) for a, d in parts])


@pytest.mark.parametrize("p, reason", [
    (plan(), "a plan needs at least one installment"),
    (plan(*[("100.00", i) for i in range(12)]), None),
    (plan(*[("100.00", i) for i in range(13)]),
     "13 installments exceed the policy's maximum of 12"),
    (plan(("600.00", -1), ("600.00", 5)),
     "first installment date 2026-03-09 is in the past (today is 2026-03-10)"),
    (plan(("600.00", 5), ("600.00", 5)), "installment dates must be strictly increasing"),
    (plan(("600.00", 5), ("600.00", 3)), "installment dates must be strictly increasing"),
    (plan(("600.00", 1), ("500.00", 5)), "installments add up to 1100.00, not the balance 1200.00"),
    (plan(("1200.00", 1), ("0", 5)), "installment 2 amount must be positive, got 0"),
    (plan(("1200.00", 1), currency="USD"),
     "installment 1 currency USD differs from the loan's CNY"),
    (plan(("1200.00", 1), agent=""), "agent is required"),
])
def test_plan_checks(p, reason):
    if reason is None:
        negotiation.check_plan(case(), p, TODAY)
    else:
        assert refusal(negotiation.check_plan, case(), p, TODAY) == reason


def test_plan_may_start_today():
    negotiation.check_plan(case(), plan(("600.00", 0), ("600.00", 7)), TODAY)


# ------------------------------------------------------------------ extension, waiver, settlement


def test_extension():
    ext = lambda d: ExtensionInput(agent="a1", new_due_date=d)  # noqa: E731
    negotiation.check_extension(case(), ext(DUE + timedelta(days=60)))
    assert refusal(negotiation.check_extension, case(), ext(DUE)) == \
        f"new due date {DUE} is not after the current one {DUE}"
    assert refusal(negotiation.check_extension, case(), ext(DUE + timedelta(days=61))) == (
        f"new due date {DUE + timedelta(days=61)} is beyond the policy's maximum extension of "
        f"60 days from the original due date ({DUE + timedelta(days=60)})")


def waiver(component: str, amount: str, currency: str = "CNY") -> WaiverInput:
    return WaiverInput(agent="a1", component=component, amount=D(amount), currency=currency)


def test_waiver():
    negotiation.check_waiver(case(), waiver("interest", "150.00"))
    negotiation.check_waiver(case(), waiver("fees", "50.00"))
    assert refusal(negotiation.check_waiver, case(), waiver("principal", "1.00")) == \
        "only interest or fees can be waived, not 'principal'"
    assert refusal(negotiation.check_waiver, case(), waiver("interest", "150.01")) == \
        "cannot waive 150.01 of interest: 150.00 outstanding"
    assert refusal(negotiation.check_waiver, case(fees=D("0")), waiver("fees", "1.00")) == \
        "cannot waive 1.00 of fees: 0 outstanding"
    assert refusal(negotiation.check_waiver, case(), waiver("fees", "-1.00")) == \
        "waived amount must be positive, got -1.00"
    assert refusal(negotiation.check_waiver, case(), waiver("fees", "1.00", "EUR")) == \
        "waived currency EUR differs from the loan's CNY"


def settlement(amount: str, days: int = 5) -> SettlementInput:
    return SettlementInput(agent="a1", amount=D(amount), currency="CNY",
                           pay_by=TODAY + timedelta(days=days))


def test_settlement():
    negotiation.check_settlement(case(), settlement("600.00"), TODAY)  # the floor itself
    negotiation.check_settlement(case(), settlement("1199.99", 14), TODAY)
    assert refusal(negotiation.check_settlement, case(), settlement("599.99"), TODAY) == \
        "settlement 599.99 is below the policy's floor of 600.00"
    assert refusal(negotiation.check_settlement, case(), settlement("1200.00"), TODAY) == \
        "a settlement must be below the balance 1200.00; record a promise instead"
    assert refusal(negotiation.check_settlement, case(), settlement("700.00", -1), TODAY) == \
        "pay-by date 2026-03-09 is in the past (today is 2026-03-10)"
    assert refusal(negotiation.check_settlement, case(), settlement("700.00", 15), TODAY) == \
        "pay-by date 2026-03-25 is beyond the policy's horizon (2026-03-24)"


def test_settlement_floor_follows_the_policy_and_the_balance():
    c = case(policy=pinned(make_loan("R1", DUE), min_settlement_ratio=D("0.8")),
             principal=D("800.00"))
    # balance 800 + 150 + 50 = 1000: floor 800.00
    assert refusal(negotiation.check_settlement, c, settlement("799.99"), TODAY) == \
        "settlement 799.99 is below the policy's floor of 800.00"


# -------------------------------------------------------------------- holds, cease, close


def test_hold():
    negotiation.check_hold(case(), HoldInput(actor="a1", kind="dispute"), TODAY)
    negotiation.check_hold(
        case(), HoldInput(actor="a1", kind="hardship", review_by=TODAY + timedelta(days=1)), TODAY)
    assert refusal(negotiation.check_hold, case(), HoldInput(actor="a1", kind="holiday"),
                   TODAY) == "hold kind must be one of dispute, hardship, manual, not 'holiday'"
    assert refusal(negotiation.check_hold, case(),
                   HoldInput(actor="a1", kind="manual", review_by=TODAY), TODAY) == \
        "review date 2026-03-10 must be after today (2026-03-10)"
    held = case(hold=HoldState(kind="dispute", actor="a1", reason="",
                               since=datetime(2026, 3, 1, tzinfo=UTC),
                               review_by=date(2026, 3, 31)))
    assert refusal(negotiation.check_hold, held, HoldInput(actor="a1", kind="hardship"), TODAY) == \
        "case is already on a dispute hold until 2026-03-31"
    negotiation.check_resolve(held)
    assert refusal(negotiation.check_resolve, case()) == "case is not on hold"


def test_cease_and_close():
    negotiation.check_cease(case())
    assert refusal(negotiation.check_cease, case(ceased=True)) == \
        "contact has already ceased for this case"
    for reason in negotiation.CLOSE_REASONS:
        negotiation.check_close(case(), CloseInput(actor="a1", reason=reason))
    assert refusal(negotiation.check_close, case(), CloseInput(actor="a1", reason="moved")) == \
        "close reason must be one of bankruptcy, deceased, sold, fraud, other, not 'moved'"


@pytest.mark.parametrize("check, args", [
    (negotiation.check_plan, (plan(("1200.00", 1)), TODAY)),
    (negotiation.check_extension,
     (ExtensionInput(agent="a1", new_due_date=DUE + timedelta(days=1)),)),
    (negotiation.check_waiver, (waiver("fees", "1.00"),)),
    (negotiation.check_settlement, (settlement("700.00"), TODAY)),
    (negotiation.check_hold, (HoldInput(actor="a1", kind="dispute"), TODAY)),
    (negotiation.check_resolve, ()),
    (negotiation.check_cease, ()),
    (negotiation.check_close, (CloseInput(actor="a1", reason="other"),)),
])
def test_everything_is_refused_on_a_closed_case(check, args):
    closed = case(state=CaseState.SETTLED, close_reason="settled")
    assert refusal(check, closed, *args) == "case is closed (settled: settled)"
