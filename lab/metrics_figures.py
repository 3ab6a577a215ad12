"""The book's figures for any weighting of its cases: one row of weights is the book itself, many
rows are bootstrap replicates (lab/intervals.py). Every figure is computed from sums of the
per-case columns (lab/metrics.py `Book`), so one integer matrix product gives them all.

Kinds: `rate` (0 to 1), `days`, `count`, `ratio` (contacts per cure, cost per unit recovered) and
`money` (minor units of `currency`, exact integers; lab.metrics.from_units makes them Decimal).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from lab.metrics import LEGAL_ACTIONS, STAGES, Book, Weights

Kind = Literal["rate", "days", "count", "ratio", "money"]
Values = npt.NDArray[np.float64]  # one value per row of weights; NaN where undefined
# Money figures stay integers of minor units (exact); the rest are floats.
Column = npt.NDArray[np.float64] | npt.NDArray[np.int64]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    kind: Kind
    currency: str | None = None


ROLLS: Final = tuple(f"{a}->{b}" for a, b in pairwise(STAGES))


def specs(book: Book) -> list[FigureSpec]:
    """Every figure of `book`, in the order tables and JSON show them."""
    out = [FigureSpec("cases", "count"), FigureSpec("recovery_rate", "rate")]
    out += [FigureSpec(f"recovered.{c}", "money", c) for c in book.currencies]
    out += [FigureSpec("cure_rate", "rate"), FigureSpec("median_days_to_cure", "days")]
    out += [FigureSpec(f"roll_rate.{r}", "rate") for r in ROLLS]
    out += [FigureSpec("promises_made", "count"), FigureSpec("promises_kept", "count"),
            FigureSpec("promise_kept_rate", "rate"), FigureSpec("contacts", "count")]
    out += [FigureSpec(f"contacts.{c}", "count") for c in book.channels]
    out += [FigureSpec("contacts_per_cure", "ratio")]
    out += [FigureSpec(f"contacts_per_cure.{c}", "ratio") for c in book.channels]
    out += [FigureSpec("compliance_deferrals", "count"), FigureSpec("breaches", "count"),
            FigureSpec("legal_actions", "count")]
    out += [FigureSpec(f"legal_actions.{a}", "count") for a in LEGAL_ACTIONS]
    out += [FigureSpec(f"cost.{c}", "money", c) for c in book.currencies]
    out += [FigureSpec("cost_to_collect", "ratio")]
    return out


def _ratio(top: Values, bottom: Values) -> Values:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)


def _by_currency(share: Values, rates: Values) -> Values:
    """Per-currency rates averaged by each currency's share of the cases, over the currencies
    where the rate is defined; NaN where it is defined for none."""
    defined = ~np.isnan(rates)
    weight = np.where(defined, share, 0).sum(axis=1)
    total = np.where(defined, share * np.where(defined, rates, 0), 0).sum(axis=1)
    return _ratio(total, weight)


def compute(book: Book, weights: Weights) -> dict[str, Column]:
    """Each figure's value for each row of `weights` (shape: replicates x cases)."""
    n_cur = len(book.currencies)
    onehot = (book.currency[:, None] == np.arange(n_cur)[None, :]).astype(np.int64)
    both = book.reached[:, :-1] * book.reached[:, 1:]  # in a stage and in the next one
    columns = [
        np.ones(book.size, dtype=np.int64)[:, None], book.cured[:, None],
        book.recovered[:, None] * onehot, book.placed[:, None] * onehot,
        book.cost[:, None] * onehot, onehot, book.reached, both,
        book.promises[:, None], book.kept[:, None], book.contacts,
        book.deferrals[:, None], book.breaches[:, None], book.legal,
    ]
    exact = weights @ np.concatenate(columns, axis=1)
    sums = exact.astype(np.float64)
    parts: list[Values] = []
    at = 0
    for c in columns:
        width = c.shape[1]
        parts.append(sums[:, at:at + width])
        at += width
    (cases, cured, rec, placed, cost, per_cur, reached, moved, promises, kept, contacts,
     deferrals, breaches, legal) = parts
    rec_at, cost_at = 2, 2 + 2 * n_cur  # first columns of `recovered` and `cost` in `exact`
    cases_, cured_ = cases[:, 0], cured[:, 0]
    out: dict[str, Column] = {"cases": cases_}
    # Rates of different currencies are averaged by their share of the cases: amounts in two
    # currencies are never added together.
    share = _ratio(per_cur, cases_[:, None])
    out["recovery_rate"] = _by_currency(share, _ratio(rec, placed))
    for k, c in enumerate(book.currencies):
        out[f"recovered.{c}"] = exact[:, rec_at + k]
    out["cure_rate"] = _ratio(cured_, cases_)
    out["median_days_to_cure"] = _median_days(book, weights)
    for i, r in enumerate(ROLLS):
        out[f"roll_rate.{r}"] = _ratio(moved[:, i], reached[:, i])
    out["promises_made"], out["promises_kept"] = promises[:, 0], kept[:, 0]
    out["promise_kept_rate"] = _ratio(kept[:, 0], promises[:, 0])
    total = contacts.sum(axis=1)
    out["contacts"] = total
    for j, ch in enumerate(book.channels):
        out[f"contacts.{ch}"] = contacts[:, j]
    out["contacts_per_cure"] = _ratio(total, cured_)
    for j, ch in enumerate(book.channels):
        out[f"contacts_per_cure.{ch}"] = _ratio(contacts[:, j], cured_)
    out["compliance_deferrals"], out["breaches"] = deferrals[:, 0], breaches[:, 0]
    out["legal_actions"] = legal.sum(axis=1)
    for j, a in enumerate(LEGAL_ACTIONS):
        out[f"legal_actions.{a}"] = legal[:, j]
    for k, c in enumerate(book.currencies):
        out[f"cost.{c}"] = exact[:, cost_at + k]
    out["cost_to_collect"] = _by_currency(share, _ratio(cost, rec))
    return out


def _median_days(book: Book, weights: Weights) -> Values:
    """The weighted median of days to cure over cured cases: the first value whose cumulative
    weight reaches half (so a book and its replicates use one definition)."""
    cured = np.flatnonzero(book.cured)
    if cured.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = cured[np.argsort(book.days[cured], kind="stable")]
    w = weights[:, order]
    cum = np.cumsum(w, axis=1)
    half = cum[:, -1:] / 2
    idx = np.argmax(cum >= half, axis=1)
    days = book.days[order][idx].astype(np.float64)
    return np.where(cum[:, -1] > 0, days, np.nan)
