"""A caller's raw values (CLI text, JSON fields) turned into the case's input dataclasses.

Every rule a request must pass before it reaches a case lives here, so the CLI and the HTTP API
refuse the same things with the same message: `BadInput` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

from contracts.messages import (
    CLOSE_REASONS,
    HOLD_KINDS,
    CeaseInput,
    CloseInput,
    ExtensionInput,
    HoldInput,
    Installment,
    PaymentInput,
    PlanInput,
    PromiseInput,
    ResolveHoldInput,
    SettlementInput,
    TaskOutcome,
    TaskOutcomeInput,
    WaiverInput,
)
from service.currencies import parse_currency, parse_money
from service.errors import BadInput
from service.masking import quoted
from service.values import (
    parse_amount,
    parse_choice,
    parse_date,
    parse_identifier,
    parse_instant,
    parse_label,
    parse_note,
    parse_person,
)

__all__ = ["CLOSE_REASONS", "HOLD_KINDS", "OPERATOR_HOLDS", "TASK_OUTCOMES", "WAIVABLE"]

WAIVABLE: Final = ("interest", "fees")
OPERATOR_HOLDS: Final = tuple(k for k in HOLD_KINDS if k != "dispute")  # dispute: its own verb
# An agent reports what happened; a missed deadline is the workflow's own finding.
TASK_OUTCOMES: Final = tuple(o.value for o in TaskOutcome if o != TaskOutcome.DEADLINE_MISSED)

Amount = str | int | Decimal


def payment_input(payment_id: str, amount: Amount, currency: str,
                  paid_at: str | None = None) -> PaymentInput:
    value, code = parse_money(amount, currency)
    when = parse_instant(paid_at, "paid_at", not_in_future=True) if paid_at else None
    return PaymentInput(payment_id=parse_identifier(payment_id, "payment_id"), amount=value,
                        currency=code, paid_at=when)


def promise_input(agent: str, amount: Amount, currency: str, date: str) -> PromiseInput:
    value, code = parse_money(amount, currency)
    return PromiseInput(parse_person(agent, "agent"), value, code, parse_date(date, "date"))


def installment(text: str, n: int) -> Installment:
    """`AMOUNT@YYYY-MM-DD`, the n-th (from 1) of a plan."""
    amount, at, day = text.partition("@")
    if not at:
        raise BadInput(f"installment {n}", f"{quoted(text)}is not AMOUNT@YYYY-MM-DD")
    return Installment(parse_amount(amount, f"installment {n} amount"),
                       parse_date(day, f"installment {n} date"))


def plan_input(agent: str, currency: str, installments: Sequence[str]) -> PlanInput:
    code = parse_currency(currency)
    items = [installment(text, n) for n, text in enumerate(installments, 1)]
    for n, item in enumerate(items, 1):
        parse_money(item.amount, code, f"installment {n} amount")
    return PlanInput(parse_person(agent, "agent"), code, items)


def extension_input(agent: str, new_due_date: str, reason: str | None = None) -> ExtensionInput:
    return ExtensionInput(parse_person(agent, "agent"), parse_date(new_due_date, "new_due_date"),
                          parse_note(reason, "reason"))


def waiver_input(agent: str, component: str, amount: Amount, currency: str,
                 reason: str | None = None) -> WaiverInput:
    value, code = parse_money(amount, currency)
    part = parse_choice(component, "component", WAIVABLE)
    return WaiverInput(parse_person(agent, "agent"), part, value, code,
                       parse_note(reason, "reason"))


def settlement_input(agent: str, amount: Amount, currency: str, pay_by: str) -> SettlementInput:
    value, code = parse_money(amount, currency)
    return SettlementInput(parse_person(agent, "agent"), value, code, parse_date(pay_by, "pay_by"))


def dispute_input(actor: str, reason: str | None = None,
                  review_by: str | None = None) -> HoldInput:
    return _hold(actor, "dispute", reason, review_by)


def hold_input(actor: str, kind: str, reason: str | None = None,
               review_by: str | None = None) -> HoldInput:
    return _hold(actor, parse_choice(kind, "kind", OPERATOR_HOLDS), reason, review_by)


def _hold(actor: str, kind: str, reason: str | None, review_by: str | None) -> HoldInput:
    return HoldInput(parse_person(actor, "actor"), kind, parse_note(reason, "reason"),
                     parse_date(review_by, "review_by") if review_by else None)


def resolve_input(actor: str, resolution: str = "resolved",
                  reason: str | None = None) -> ResolveHoldInput:
    return ResolveHoldInput(parse_person(actor, "actor"), parse_label(resolution, "resolution", 64),
                            parse_note(reason, "reason"))


def cease_input(actor: str, reason: str | None = None) -> CeaseInput:
    return CeaseInput(parse_person(actor, "actor"),
                      parse_note(reason, "reason", default="borrower request"))


def close_input(actor: str, reason: str) -> CloseInput:
    return CloseInput(parse_person(actor, "actor"), parse_choice(reason, "reason", CLOSE_REASONS))


def task_outcome_input(task_key: str, outcome: str, agent: str,
                       note: str | None = None, *, at: str | None = None) -> TaskOutcomeInput:
    """`at`: when the call or visit happened (ISO with offset; default: when it is reported).
    The case refuses a time in the future or before the task was created."""
    return TaskOutcomeInput(
        parse_label(task_key, "task_key", 200),
        TaskOutcome(parse_choice(outcome, "outcome", TASK_OUTCOMES)),
        parse_person(agent, "agent"), parse_note(note, "note", 500),
        at=parse_instant(at, "at") if at else None)
