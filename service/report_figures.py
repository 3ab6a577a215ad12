"""The portfolio report's figures: per policy version and segment, a monthly series, and the
compliance breaches and unapplied money of the whole portfolio.

Money is `Decimal`. Rates are `Decimal` rounded to 4 places (`None` where the denominator is 0).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any, Final

from contracts.messages import STAGE_ORDER
from service.shapes import jsonable

# The ladder's stages from best to worst; roll rates are measured along this order.
STAGE_RANKS: Final = tuple(s.value for s in STAGE_ORDER)
ROLL_TRANSITIONS: Final = tuple(
    f"{a}->{b}" for a, b in pairwise(STAGE_RANKS))
RATE_PLACES: Final = Decimal("0.0001")


def rate(numerator: int | Decimal, denominator: int | Decimal) -> Decimal | None:
    """numerator / denominator rounded half-up to 4 places; None when the denominator is 0."""
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


class CaseRates:
    """The two rates a row of figures reports, from its counts: mixed into the row dataclasses
    (its annotations are not fields; each row declares its own)."""

    cases: int
    placed: Decimal
    collected: Decimal
    cured: int

    @property
    def recovery_rate(self) -> Decimal | None:
        return rate(self.collected, self.placed)

    @property
    def cure_rate(self) -> Decimal | None:
        return rate(self.cured, self.cases)


@dataclass
class SegmentFigures(CaseRates):
    policy_name: str
    policy_version: str
    segment: str
    currency: str
    cases: int
    placed: Decimal
    collected: Decimal
    outstanding: Decimal
    cured: int
    promises_kept: int
    promises_broken: int
    contacts_sent: int
    reached: dict[str, int]  # stage -> cases that entered it
    rolled: dict[str, int]  # "x->y" -> of those that entered x, cases whose next stage was worse
    by_state: dict[str, int]

    @property
    def roll_rates(self) -> dict[str, Decimal | None]:
        return {t: rate(self.rolled.get(t, 0), self.reached.get(t.split("->")[0], 0))
                for t in ROLL_TRANSITIONS}

    @property
    def promise_kept_rate(self) -> Decimal | None:
        return rate(self.promises_kept, self.promises_kept + self.promises_broken)

    @property
    def contacts_per_cure(self) -> Decimal | None:
        return rate(self.contacts_sent, self.cured)

    def to_json(self) -> dict[str, Any]:
        plain: dict[str, Any] = jsonable({
            **asdict(self), "recovery_rate": self.recovery_rate, "cure_rate": self.cure_rate,
            "roll_rates": self.roll_rates, "promise_kept_rate": self.promise_kept_rate,
            "contacts_per_cure": self.contacts_per_cure,
        })
        return plain


@dataclass
class SeriesPoint:
    """One month of one policy version: flows in the month and the rates they give."""

    month: date
    policy_name: str
    policy_version: str
    currency: str
    opened: int
    placed: Decimal  # placed in cases opened this month
    collected: Decimal  # paid this month
    cumulative_placed: Decimal
    cumulative_collected: Decimal
    in_stage: dict[str, int]  # stage -> cases in it at some time during the month
    rolled: dict[str, int]  # transition -> of those, cases that moved to a worse stage this month

    @property
    def recovery_rate(self) -> Decimal | None:
        """Collected to date over placed to date (cumulative recovery)."""
        return rate(self.cumulative_collected, self.cumulative_placed)

    @property
    def roll_rates(self) -> dict[str, Decimal | None]:
        return {t: rate(self.rolled.get(t, 0), self.in_stage.get(t.split("->")[0], 0))
                for t in ROLL_TRANSITIONS}

    def to_json(self) -> dict[str, Any]:
        plain: dict[str, Any] = jsonable({**asdict(self), "recovery_rate": self.recovery_rate,
                                          "roll_rates": self.roll_rates})
        return plain


@dataclass
class UnappliedMoney:
    """Payments received in one currency that the cases could not apply (still unapplied)."""

    currency: str
    count: int
    amount: Decimal


@dataclass
class Report:
    as_of: datetime
    rows: list[SegmentFigures]
    series: list[SeriesPoint]
    # Agent calls and visits made outside the rule pack's window or over a cap, by the rule
    # broken (contacts with decision 'breach'), most frequent first.
    breaches: dict[str, int] = field(default_factory=dict)
    # Money received that could not be applied, per currency (never added across currencies).
    unapplied: list[UnappliedMoney] = field(default_factory=list)
    # Per agency and currency (service/agency_report.py), as JSON-ready rows.
    agencies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def breach_total(self) -> int:
        return sum(self.breaches.values())

    def by_policy_version(self) -> list[SegmentFigures]:
        """The rows summed over segments, one per policy version (and currency)."""
        groups: dict[tuple[str, str, str], list[SegmentFigures]] = defaultdict(list)
        for r in self.rows:
            groups[(r.policy_name, r.policy_version, r.currency)].append(r)
        out = []
        for (name, version, currency), rows in sorted(groups.items()):
            def total(attr: str, rows: list[SegmentFigures] = rows) -> Any:
                return sum((getattr(r, attr) for r in rows), start=type(getattr(rows[0], attr))())

            def merged(attr: str, rows: list[SegmentFigures] = rows) -> dict[str, int]:
                acc: dict[str, int] = defaultdict(int)
                for r in rows:
                    for k, v in getattr(r, attr).items():
                        acc[k] += v
                return dict(acc)

            out.append(SegmentFigures(
                policy_name=name, policy_version=version, segment="*", currency=currency,
                cases=total("cases"), placed=total("placed"), collected=total("collected"),
                outstanding=total("outstanding"), cured=total("cured"),
                promises_kept=total("promises_kept"), promises_broken=total("promises_broken"),
                contacts_sent=total("contacts_sent"), reached=merged("reached"),
                rolled=merged("rolled"), by_state=merged("by_state"),
            ))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "rows": [r.to_json() for r in self.rows],
            "policy_versions": [r.to_json() for r in self.by_policy_version()],
            "series": [p.to_json() for p in self.series],
            "breaches": {"total": self.breach_total, "by_rule": dict(self.breaches)},
            "unapplied_payments": [jsonable(asdict(u)) for u in self.unapplied],
            "agencies": self.agencies,
        }
