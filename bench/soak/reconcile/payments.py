"""Payments: every one reported applied or kept unapplied, once, to the cent."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bench.soak.reconcile.inputs import (
    CLOSED_CASE_REASON,
    REFUSALS,
    CaseRow,
    PaymentRow,
    ReportedPayment,
    UnappliedRow,
    WorkflowFact,
)


@dataclass
class PaymentFigures:
    reported: int = 0
    reported_amount: dict[str, Decimal] = field(default_factory=dict)  # currency -> sum
    repeats: int = 0  # reports of a payment id reported before
    applied: int = 0
    applied_amount: dict[str, Decimal] = field(default_factory=dict)
    unapplied: int = 0
    unapplied_amount: dict[str, Decimal] = field(default_factory=dict)
    unapplied_closed: int = 0  # of the unapplied: reported after the case's workflow had ended
    excess_amount: dict[str, Decimal] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # refused, and the loan system was told
    mismatched: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)  # cases whose money does not add up
    unreported: list[str] = field(default_factory=list)  # applied but never reported

    @property
    def conserved(self) -> bool:
        return not (self.lost or self.mismatched or self.unbalanced or self.unreported)


def _add(sums: dict[str, Decimal], currency: str, amount: Decimal) -> None:
    sums[currency] = sums.get(currency, Decimal("0")) + amount


def _excess(p: PaymentRow) -> Decimal:
    """What of a payment was allocated as excess (paid beyond the balance)."""
    return Decimal(p.allocation.get("excess", "0"))


def check_payments(reported: Sequence[ReportedPayment], applied: Sequence[PaymentRow],
                   unapplied: Sequence[UnappliedRow], cases: Sequence[CaseRow],
                   workflows: Sequence[WorkflowFact] = ()) -> PaymentFigures:
    """Every payment reported is applied or kept unapplied, once, to the cent; and each case's
    balance is what was placed less what was applied to it (PostgreSQL and Temporal agree)."""
    f = PaymentFigures()
    first: dict[tuple[str, str], ReportedPayment] = {}
    for r in reported:
        k = (r.loan_id, r.payment_id)
        if k in first:
            f.repeats += 1
            continue
        first[k] = r
    got = {(p.loan_id, p.payment_id): p for p in applied}
    kept = {(u.loan_id, u.payment_id): u for u in unapplied if u.status == "unapplied"}
    for k, r in list(first.items()):
        if r.answer in REFUSALS and k not in got and k not in kept:
            f.refused.append(f"{r.loan_id} payment {r.payment_id} of {r.amount} {r.currency}: "
                             f"answered {r.answer}, not kept")
            del first[k]
    f.reported = len(first)
    for r in first.values():
        _add(f.reported_amount, r.currency, r.amount)
    for k, r in sorted(first.items()):
        p, u = got.get(k), kept.get(k)
        if p is None and u is None:
            f.lost.append(f"{r.loan_id} payment {r.payment_id} of {r.amount} {r.currency}: "
                          f"neither applied nor unapplied (answer {r.answer})")
        elif p is not None and u is not None:
            f.mismatched.append(f"{r.loan_id} payment {r.payment_id}: applied and unapplied")
        else:
            row_amount = p.amount if p is not None else u.amount  # type: ignore[union-attr]
            if row_amount != r.amount:
                f.mismatched.append(f"{r.loan_id} payment {r.payment_id}: reported {r.amount}, "
                                    f"recorded {row_amount}")
    for p in applied:
        f.applied += 1
        _add(f.applied_amount, p.currency, p.amount)
        if (p.loan_id, p.payment_id) not in first:
            f.unreported.append(f"{p.loan_id} payment {p.payment_id}: applied, never reported")
        parts = sum((Decimal(v) for v in p.allocation.values()), Decimal("0"))
        if parts != p.amount:
            f.mismatched.append(f"{p.loan_id} payment {p.payment_id}: allocation sums to {parts},"
                                f" amount {p.amount}")
        _add(f.excess_amount, p.currency, _excess(p))
    for u in kept.values():
        f.unapplied += 1
        f.unapplied_closed += u.reason.startswith(CLOSED_CASE_REASON)
        _add(f.unapplied_amount, u.currency, u.amount)
    to_balance: dict[str, Decimal] = defaultdict(Decimal)
    for p in applied:
        to_balance[p.loan_id] += p.amount - _excess(p)
    sa = {w.loan_id: w for w in workflows}
    for c in cases:
        want = c.amount_placed - to_balance[c.loan_id]
        if c.outstanding != want:
            f.unbalanced.append(f"{c.loan_id}: placed {c.amount_placed} - applied "
                                f"{to_balance[c.loan_id]} = {want}, outstanding {c.outstanding}")
        w = sa.get(c.loan_id)
        if (w is not None and w.status != "running" and w.outstanding is not None
                and w.outstanding != math.floor(c.outstanding)):
            f.unbalanced.append(f"{c.loan_id}: Temporal OutstandingAmount {w.outstanding}, "
                                f"PostgreSQL {c.outstanding}")
    return f
