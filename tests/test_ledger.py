"""The ledger without Temporal: allocation in the policy's order, waivers, formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.ledger import COMPONENTS, Balance, balance_of, format_amount

D = Decimal
DEFAULT_ORDER = ["fees", "interest", "principal"]


def loan_balance() -> Balance:
    return balance_of(D("1200.00"), D("150.00"), D("50.00"))  # the test loan: 1000 principal


def test_balance_of_splits_the_amount_overdue():
    b = loan_balance()
    assert (b.principal, b.interest, b.fees, b.total) == (D("1000.00"), D("150.00"), D("50.00"), D(
        "1200.00"))


def test_allocation_follows_fees_interest_principal():
    b, allocation, excess = loan_balance().allocate(D("120.00"), DEFAULT_ORDER)
    assert allocation == {"fees": D("50.00"), "interest": D("70.00")}
    assert list(allocation) == ["fees", "interest"]  # in the order applied
    assert (b.fees, b.interest, b.principal, excess) == (D("0"), D("80.00"), D("1000.00"), D("0"))


def test_a_payment_smaller_than_the_first_component():
    b, allocation, excess = loan_balance().allocate(D("20.00"), DEFAULT_ORDER)
    assert allocation == {"fees": D("20.00")} and b.fees == D("30.00") and excess == 0


def test_components_already_cleared_are_not_listed():
    start = Balance(principal=D("500.00"), interest=D("0"), fees=D("0"))
    b, allocation, excess = start.allocate(D("100.00"), DEFAULT_ORDER)
    assert allocation == {"principal": D("100.00")} and b.total == D("400.00") and excess == 0


def test_the_order_is_the_policys():
    b, allocation, excess = loan_balance().allocate(D("1050.00"), ["principal", "interest", "fees"])
    assert allocation == {"principal": D("1000.00"), "interest": D("50.00")}
    assert (b.principal, b.interest, b.fees, excess) == (D("0"), D("100.00"), D("50.00"), D("0"))


def test_exact_payment_clears_everything():
    b, allocation, excess = loan_balance().allocate(D("1200.00"), DEFAULT_ORDER)
    assert b.total == 0 and excess == 0
    assert allocation == {"fees": D("50.00"), "interest": D("150.00"), "principal": D("1000.00")}


def test_overpayment_returns_the_excess():
    b, allocation, excess = loan_balance().allocate(D("1250.00"), DEFAULT_ORDER)
    assert b.total == 0 and excess == D("50.00") and sum(allocation.values()) == D("1200.00")


def test_payment_on_a_cleared_balance_is_all_excess():
    zero = Balance(D("0"), D("0"), D("0"))
    b, allocation, excess = zero.allocate(D("10.00"), DEFAULT_ORDER)
    assert allocation == {} and excess == D("10.00") and b == zero


def test_waiver_lowers_only_the_named_component():
    b = loan_balance().waive("interest", D("100.00"))
    assert (b.principal, b.interest, b.fees) == (D("1000.00"), D("50.00"), D("50.00"))
    b = b.waive("fees", D("50.00"))
    assert (b.principal, b.interest, b.fees, b.total) == (D("1000.00"), D("50.00"), D("0.00"), D(
        "1050.00"))


def test_waiver_beyond_the_component_is_refused():
    with pytest.raises(ValueError, match=r"only 150\.00 outstanding"):
        loan_balance().waive("interest", D("150.01"))


def test_unknown_component():
    with pytest.raises(ValueError, match="unknown balance component 'penalty'"):
        loan_balance().component("penalty")
    with pytest.raises(ValueError):
        loan_balance().allocate(D("1.00"), ["penalty"])


def test_balance_is_immutable():
    b = loan_balance()
    b.allocate(D("500.00"), DEFAULT_ORDER)
    b.waive("fees", D("10.00"))
    assert b == loan_balance()


@pytest.mark.parametrize("amount, text", [
    (D("0"), "0.00"), (D("5"), "5.00"), (D("1080"), "1,080.00"), (D("1234567.891"), "1,234,567.89"),
])
def test_format_amount(amount, text):
    assert format_amount(amount) == text


cents = st.integers(min_value=0, max_value=10**9).map(lambda c: D(c).scaleb(-2))


@given(principal=cents, interest=cents, fees=cents,
       amount=st.integers(min_value=1, max_value=3 * 10**9).map(lambda c: D(c).scaleb(-2)),
       order=st.permutations(list(COMPONENTS)))
def test_allocation_conserves_money(principal, interest, fees, amount, order):
    start = Balance(principal=principal, interest=interest, fees=fees)
    b, allocation, excess = start.allocate(amount, order)
    assert sum(allocation.values(), D("0")) + excess == amount
    assert b.total == start.total - sum(allocation.values(), D("0"))
    assert all(b.component(c) >= 0 for c in COMPONENTS) and excess >= 0
    assert all(v > 0 for v in allocation.values())
    # Excess only once the balance is cleared; a component is touched only when those before it are.
    assert excess == 0 or b.total == 0
    for i, name in enumerate(order):
        if name in allocation:
            assert all(b.component(earlier) == 0 for earlier in order[:i])
