"""What one policy did to a book: per-case figures read from each case's timeline, and the book's
figures (recovery, cure, roll rates, promises, contacts, deferrals, breaches, legal actions, cost)
computed from them for any weighting of the cases, which is how lab/intervals.py bootstraps them.

A case's figures come from its CaseResult and the events the case code recorded (`contact_sent`,
`task_outcome`, `stage_changed`, `promise`, `promise_kept`, `contact_deferred`,
`compliance_breach`, `legal_action`, `case_closed`): the same records a real case writes, so a
figure here means what it means in `collect report`.

Money stays exact: amounts are held as integers of a fixed minor unit (`MONEY_EXPONENT`) in the
arrays, summed as integers, and turned back into Decimal for display.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import numpy as np
import numpy.typing as npt

from contracts.channels import CHANNELS
from contracts.messages import STAGE_ORDER, CaseResult, CaseState, LoanInput, TaskOutcome
from lab.prices import Prices

STAGES: Final = tuple(s.value for s in STAGE_ORDER)
CURED_STATES: Final = frozenset({CaseState.PAID, CaseState.SETTLED})
LEGAL_ACTIONS: Final = ("lawyer_letter", "filing", "agency_placement")
# Agent work never done by its deadline is not a contact (nobody called or visited).
_NOT_A_CONTACT: Final = frozenset({TaskOutcome.DEADLINE_MISSED.value})
_STAGE_CHANGE: Final = re.compile(r"stage (\w+) -> (\w+)")
_TASK_KIND: Final = re.compile(r"^(\w+) outcome:")
# Minor units the arrays count money in: 4 decimal places holds every price (0.0079 per SMS).
MONEY_EXPONENT: Final = 4
_UNIT: Final = Decimal(1).scaleb(-MONEY_EXPONENT)

Weights = npt.NDArray[np.int64]  # (replicates, cases): how often each case is drawn


def channels() -> tuple[str, ...]:
    return tuple(CHANNELS)


def to_units(amount: Decimal) -> int:
    return int(amount.quantize(_UNIT).scaleb(MONEY_EXPONENT))


def from_units(units: int) -> Decimal:
    """Back to Decimal: in cents when that is exact (most sums), else to the unit."""
    amount = Decimal(int(units)).scaleb(-MONEY_EXPONENT)
    cents = amount.quantize(Decimal("0.01"))
    return cents if cents == amount else amount


@dataclass(frozen=True)
class CaseFigures:
    """One loan's case under one policy."""

    loan_id: str
    currency: str
    placed: Decimal
    recovered: Decimal
    cured: bool
    days_to_cure: int | None  # days past due when the case was paid or settled (0: before due)
    stages: frozenset[str]  # every stage the case was in
    promises: int
    promises_kept: int
    contacts: dict[str, int]  # attempts by channel: messages sent, calls and visits worked
    deferrals: int
    breaches: int
    legal_actions: dict[str, int]
    cost: Decimal


def case_figures(loan: LoanInput, result: CaseResult, prices: Prices) -> CaseFigures:
    events = result.timeline or []
    contacts: Counter[str] = Counter()
    legal: Counter[str] = Counter()
    stages = {result.stage.value}
    promises = kept = deferrals = breaches = 0
    cured_at = None
    for e in events:
        if e.kind == "contact_sent":
            contacts[str(e.detail.get("channel", ""))] += 1
        elif e.kind == "task_outcome" and e.detail.get("outcome") not in _NOT_A_CONTACT:
            kind = _TASK_KIND.match(e.summary)
            contacts[kind[1] if kind else "call"] += 1
        elif e.kind == "stage_changed":
            moved = _STAGE_CHANGE.match(e.summary)
            if moved:
                stages.update(moved.groups())
        elif e.kind == "promise":
            promises += 1
        elif e.kind == "promise_kept":
            kept += 1
        elif e.kind == "contact_deferred":
            deferrals += 1
        elif e.kind == "legal_action":
            legal[str(e.detail.get("action", ""))] += 1
        elif e.kind == "case_closed" and result.state in CURED_STATES:
            cured_at = e.at
        if e.kind == "compliance_breach" or e.detail.get("breach"):
            breaches += 1
    cured = result.state in CURED_STATES
    days = None
    if cured:
        at = cured_at or (events[-1].at if events else None)
        days = max(0, (at.date() - loan.due_date).days) if at is not None else 0
    cost = sum((prices.per_contact(ch) * n for ch, n in contacts.items()), Decimal(0))
    cost += sum((prices.per_legal_action(a) * n for a, n in legal.items()), Decimal(0))
    return CaseFigures(
        loan_id=loan.loan_id, currency=loan.currency, placed=loan.amount_overdue,
        recovered=result.paid_total, cured=cured, days_to_cure=days,
        stages=frozenset(s for s in stages if s in STAGES), promises=promises,
        promises_kept=kept, contacts=dict(contacts), deferrals=deferrals, breaches=breaches,
        legal_actions=dict(legal), cost=cost)


@dataclass
class Book:
    """A policy's case figures as columns, one row per case, in the book's loan order."""

    loan_ids: list[str]
    currencies: tuple[str, ...]
    currency: npt.NDArray[np.int64]  # index into `currencies`
    placed: npt.NDArray[np.int64]  # minor units
    recovered: npt.NDArray[np.int64]
    cost: npt.NDArray[np.int64]
    cured: npt.NDArray[np.int64]
    days: npt.NDArray[np.int64]  # days to cure, 0 where not cured
    reached: npt.NDArray[np.int64]  # (cases, stages)
    promises: npt.NDArray[np.int64]
    kept: npt.NDArray[np.int64]
    contacts: npt.NDArray[np.int64]  # (cases, channels)
    deferrals: npt.NDArray[np.int64]
    breaches: npt.NDArray[np.int64]
    legal: npt.NDArray[np.int64]  # (cases, legal actions)
    channels: tuple[str, ...] = field(default_factory=channels)

    @property
    def size(self) -> int:
        return len(self.loan_ids)


def book_of(figures: Sequence[CaseFigures]) -> Book:
    currencies = tuple(sorted({f.currency for f in figures}))
    chans = channels()

    def col(values: Iterable[int]) -> npt.NDArray[np.int64]:
        return np.fromiter(values, dtype=np.int64, count=len(figures))

    def grid(rows: Iterable[list[int]], width: int) -> npt.NDArray[np.int64]:
        out = np.array(list(rows), dtype=np.int64)
        return out.reshape(len(figures), width)

    return Book(
        loan_ids=[f.loan_id for f in figures], currencies=currencies,
        currency=col(currencies.index(f.currency) for f in figures),
        placed=col(to_units(f.placed) for f in figures),
        recovered=col(to_units(f.recovered) for f in figures),
        cost=col(to_units(f.cost) for f in figures),
        cured=col(int(f.cured) for f in figures),
        days=col(f.days_to_cure or 0 for f in figures),
        reached=grid(([int(s in f.stages) for s in STAGES] for f in figures), len(STAGES)),
        promises=col(f.promises for f in figures), kept=col(f.promises_kept for f in figures),
        contacts=grid(([f.contacts.get(c, 0) for c in chans] for f in figures), len(chans)),
        deferrals=col(f.deferrals for f in figures), breaches=col(f.breaches for f in figures),
        legal=grid(([f.legal_actions.get(a, 0) for a in LEGAL_ACTIONS] for f in figures),
                   len(LEGAL_ACTIONS)),
        channels=chans)


def book_figures(pairs: Iterable[tuple[LoanInput, CaseResult]], prices: dict[str, Prices]) -> Book:
    """The book of (loan, result) pairs of one policy; prices by the loan's currency."""
    figures = []
    for loan, result in pairs:
        if loan.currency not in prices:
            known = ", ".join(sorted(prices))
            raise LookupError(f"no prices for {loan.currency} (loan {loan.loan_id}); "
                              f"known: {known}")
        figures.append(case_figures(loan, result, prices[loan.currency]))
    return book_of(figures)
