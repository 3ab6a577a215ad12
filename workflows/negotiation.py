"""What an agent may agree with a borrower, checked before the workflow accepts it.

Pure functions over the case state and the local date: the update validators call them, and so
do tests, without Temporal. Each refusal is one line an agent can read.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise

from contracts import loan_rules
from contracts.messages import (
    CloseInput,
    ExtensionInput,
    HoldInput,
    PaymentInput,
    PlanInput,
    PromiseInput,
    SettlementInput,
    WaiverInput,
)
from workflows.case_state import CaseData, HoldState

CLOSE_REASONS = ("bankruptcy", "deceased", "sold", "fraud", "other")
HOLD_KINDS = ("dispute", "hardship", "manual")


class Refusal(ValueError):
    """Raised with the reason a request is refused."""


def _open(case: CaseData) -> None:
    if not case.active:
        why = f": {case.close_reason}" if case.close_reason else ""
        raise Refusal(f"case is closed ({case.state.value}{why})")


def _money(case: CaseData, amount: Decimal, currency: str, what: str) -> None:
    if currency != case.loan.currency:
        raise Refusal(f"{what} currency {currency} differs from the loan's {case.loan.currency}")
    if not amount.is_finite() or amount <= 0:
        raise Refusal(f"{what} amount must be positive, got {amount}")
    try:
        cents = amount.quantize(Decimal("0.01"))
    except InvalidOperation:  # too many digits for the context: no real amount of money
        raise Refusal(f"{what} amount is out of range: {amount}") from None
    if amount != cents:
        raise Refusal(f"{what} amount has more than 2 decimal places: {amount}")


def check_promise(case: CaseData, p: PromiseInput, today: date) -> None:
    _open(case)
    _money(case, p.amount, p.currency, "promised")
    if p.amount > case.outstanding:
        raise Refusal(f"promised amount {p.amount} exceeds the balance {case.outstanding}")
    if p.promised_date < today:
        raise Refusal(f"promised date {p.promised_date} is in the past (today is {today})")
    horizon = today + timedelta(days=case.policy.settings.promise_max_days)
    if p.promised_date > horizon:
        raise Refusal(
            f"promised date {p.promised_date} is beyond the policy's horizon of "
            f"{case.policy.settings.promise_max_days} days ({horizon})"
        )
    if not p.agent.strip():
        raise Refusal("agent is required")


def check_plan(case: CaseData, p: PlanInput, today: date) -> None:
    _open(case)
    settings = case.policy.settings
    if not p.installments:
        raise Refusal("a plan needs at least one installment")
    if len(p.installments) > settings.max_installments:
        raise Refusal(f"{len(p.installments)} installments exceed the policy's maximum of "
                      f"{settings.max_installments}")
    for i, inst in enumerate(p.installments, 1):
        _money(case, inst.amount, p.currency, f"installment {i}")
    dates = [i.due_date for i in p.installments]
    if dates[0] < today:
        raise Refusal(f"first installment date {dates[0]} is in the past (today is {today})")
    if any(b <= a for a, b in pairwise(dates)):
        raise Refusal("installment dates must be strictly increasing")
    total = sum((i.amount for i in p.installments), Decimal("0"))
    if total != case.outstanding:
        raise Refusal(f"installments add up to {total}, not the balance {case.outstanding}")
    if not p.agent.strip():
        raise Refusal("agent is required")


def check_extension(case: CaseData, e: ExtensionInput) -> None:
    _open(case)
    if e.new_due_date <= case.due_date:
        raise Refusal(f"new due date {e.new_due_date} is not after the current one {case.due_date}")
    # Measured from the loan's original due date, so repeated extensions cannot defer a case
    # without end.
    limit = case.loan.due_date + timedelta(days=case.policy.settings.max_extension_days)
    if e.new_due_date > limit:
        raise Refusal(
            f"new due date {e.new_due_date} is beyond the policy's maximum extension of "
            f"{case.policy.settings.max_extension_days} days from the original due date ({limit})"
        )


def check_waiver(case: CaseData, w: WaiverInput) -> None:
    _open(case)
    if w.component not in ("interest", "fees"):
        raise Refusal(f"only interest or fees can be waived, not {w.component!r}")
    _money(case, w.amount, w.currency, "waived")
    owed = case.balance.component(w.component)
    if w.amount > owed:
        raise Refusal(f"cannot waive {w.amount} of {w.component}: {owed} outstanding")


def check_settlement(case: CaseData, s: SettlementInput, today: date) -> None:
    _open(case)
    _money(case, s.amount, s.currency, "settlement")
    if s.amount >= case.outstanding:
        raise Refusal(f"a settlement must be below the balance {case.outstanding}; "
                      "record a promise instead")
    floor = (case.outstanding * case.policy.settings.min_settlement_ratio).quantize(Decimal("0.01"))
    if s.amount < floor:
        raise Refusal(f"settlement {s.amount} is below the policy's floor of {floor}")
    if s.pay_by < today:
        raise Refusal(f"pay-by date {s.pay_by} is in the past (today is {today})")
    horizon = today + timedelta(days=case.policy.settings.promise_max_days)
    if s.pay_by > horizon:
        raise Refusal(f"pay-by date {s.pay_by} is beyond the policy's horizon ({horizon})")


def check_hold(case: CaseData, h: HoldInput, today: date) -> None:
    _open(case)
    if h.kind not in HOLD_KINDS:
        raise Refusal(f"hold kind must be one of {', '.join(HOLD_KINDS)}, not {h.kind!r}")
    if case.hold is not None:
        raise Refusal(f"case is already on a {case.hold.kind} hold until {case.hold.review_by}")
    if h.review_by is not None and h.review_by <= today:
        raise Refusal(f"review date {h.review_by} must be after today ({today})")


def check_resolve(case: CaseData) -> HoldState:
    """The hold to resolve."""
    _open(case)
    if case.hold is None:
        raise Refusal("case is not on hold")
    return case.hold


def check_cease(case: CaseData) -> None:
    _open(case)
    if case.ceased:
        raise Refusal("contact has already ceased for this case")


def check_close(case: CaseData, c: CloseInput) -> None:
    _open(case)
    if c.reason not in CLOSE_REASONS:
        raise Refusal(f"close reason must be one of {', '.join(CLOSE_REASONS)}, not {c.reason!r}")


def check_payment_form(p: PaymentInput, now: datetime) -> None:
    """What the `pay` update refuses outright: a report no loan system means. A well-formed payment
    that cannot be applied (another currency, not positive) is accepted and kept as unapplied."""
    if not p.payment_id.strip() or len(p.payment_id) > 128 or not p.payment_id.isprintable():
        raise Refusal("payment_id must be 1-128 printable characters")
    try:
        loan_rules.check_currency(p.currency, "currency")
    except loan_rules.FieldProblem as err:
        raise Refusal(str(err)) from None
    if not p.amount.is_finite():
        raise Refusal("amount must be a finite decimal number")
    if p.paid_at is not None:
        if p.paid_at.tzinfo is None or p.paid_at.utcoffset() is None:
            raise Refusal("paid_at must carry its UTC offset")
        if p.paid_at > now + timedelta(minutes=5):
            raise Refusal("paid_at is in the future")


def check_task_time(at: datetime, created_at: datetime | None, now: datetime) -> None:
    """When an agent says a call or visit happened: after its task was created, not ahead of now."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise Refusal("at must carry its UTC offset")
    if at > now + timedelta(minutes=5):
        raise Refusal("at is in the future")
    if created_at is not None and at < created_at - timedelta(minutes=1):
        raise Refusal(f"at is before the task was created ({created_at:%Y-%m-%d %H:%M} UTC)")
