"""Confidence intervals for a book's figures, and for the difference between two policies.

By the bootstrap: the cases are drawn with replacement `replicates` times (seeded: the same seed
gives the same intervals), every figure is computed on each draw (lab/metrics_figures.py), and
the interval is the draws' central `level` share (percentiles that are draws themselves, so a
money bound is an exact amount). Two policies run on the same loans are compared case by case:
both are weighted by the same draws (a paired bootstrap), which is what makes a small difference
readable; books of different loans are drawn independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import numpy as np

from lab.metrics import Book, Weights, from_units
from lab.metrics_figures import Column, FigureSpec, Kind, compute, specs

REPLICATES: Final = 200
LEVEL: Final = 0.95

Number = int | float | Decimal


@dataclass(frozen=True)
class Estimate:
    """A figure, and the bounds of its interval (None where the figure is undefined, e.g. days to
    cure in a book where nothing cured)."""

    name: str
    kind: Kind
    value: Number | None
    low: Number | None
    high: Number | None
    currency: str | None = None


def draws(size: int, replicates: int, seed: int) -> Weights:
    """How many times each case is drawn, per replicate: (replicates, size)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, size, size=(replicates, size))
    flat = (picks + np.arange(replicates)[:, None] * size).ravel()
    return np.bincount(flat, minlength=replicates * size).reshape(replicates, size)


def _whole(size: int) -> Weights:
    return np.ones((1, size), dtype=np.int64)


def _value(kind: Kind, x: float | int | None) -> Number | None:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return None
    if kind == "money":
        return from_units(int(x))
    if kind == "count":
        return int(x) if float(x).is_integer() else round(float(x), 4)
    return round(float(x), 6)


def _bounds(values: Column, level: float) -> tuple[float | int | None, float | int | None]:
    if values.dtype.kind == "i":
        lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
        return int(lo), int(hi)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None, None
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def _estimates(spec_list: list[FigureSpec], point: dict[str, Column],
               reps: dict[str, Column], level: float) -> list[Estimate]:
    out = []
    for spec in spec_list:
        lo, hi = _bounds(reps[spec.name], level)
        out.append(Estimate(spec.name, spec.kind, _value(spec.kind, point[spec.name][0]),
                            _value(spec.kind, lo), _value(spec.kind, hi), spec.currency))
    return out


def summarise(book: Book, *, replicates: int = REPLICATES, seed: int = 0,
              level: float = LEVEL) -> list[Estimate]:
    """Every figure of `book` with its bootstrap interval."""
    if book.size == 0:
        raise ValueError("an empty book has no figures")
    point = compute(book, _whole(book.size))
    reps = compute(book, draws(book.size, replicates, seed))
    return _estimates(specs(book), point, reps, level)


def difference(champion: Book, challenger: Book, *, replicates: int = REPLICATES,
               seed: int = 0, level: float = LEVEL) -> list[Estimate]:
    """Challenger minus champion, per figure both books have, with its interval (paired when
    both ran the same loans in the same order)."""
    if champion.size == 0 or challenger.size == 0:
        raise ValueError("an empty book has no figures")
    paired = champion.loan_ids == challenger.loan_ids
    w_a = draws(champion.size, replicates, seed)
    w_b = w_a if paired else draws(challenger.size, replicates, seed + 1)
    a_point, b_point = (compute(champion, _whole(champion.size)),
                        compute(challenger, _whole(challenger.size)))
    a_reps, b_reps = compute(champion, w_a), compute(challenger, w_b)
    shared = [s for s in specs(champion) if s in specs(challenger)]
    point = {s.name: b_point[s.name] - a_point[s.name] for s in shared}
    reps = {s.name: b_reps[s.name] - a_reps[s.name] for s in shared}
    return _estimates(shared, point, reps, level)
