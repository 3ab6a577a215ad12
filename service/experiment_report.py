"""Champion/challenger arms side by side: recovery and cure rate per arm, each challenger's
difference from the champion with a confidence interval, the cases behind each arm, and whether
an arm is large enough to read.

Arms come from the `experiment` and `arm` columns of `cases` (pinned when each case opened,
policies/experiments.py). Figures are as of a time, with the portfolio report's meanings
(service/report.py): recovery is payments made by then over the amount placed, cure is cases paid
or settled by then over cases opened by then. Currencies are never added together.

Intervals use the normal approximation. Cure rate is a proportion of cases: the difference
p2 - p1 has variance p1(1-p1)/n1 + p2(1-p2)/n2. Recovery rate is a ratio of sums (collected over
placed) whose cases differ in size, so each arm's rate gets the ratio estimator's variance
(delta method): n / ((n-1) P^2) * sum((c_i - R p_i)^2), with c_i, p_i a case's collected and
placed amounts, P their total placed and R = C/P; the two arms are independent samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from statistics import NormalDist
from typing import Any, Final

import asyncpg

from policies.experiments import CHAMPION
from service.case_filters import POLICY_NAME_RE, matching
from service.report_figures import RATE_PLACES, CaseRates
from service.shapes import as_utc, jsonable

# A challenger arm under about 2,500 accounts is hard to read (/work/shared/providers-notes.md):
# a 95% interval on a 20% cure rate is then about +-1.6 points per arm, +-2.2 on the difference.
MIN_ARM_CASES: Final = 2500
CONFIDENCE: Final = 0.95

# One row per case (its payments by then summed), then one per arm; sums of squares and products
# give the ratio estimator's variance without returning the cases.
_ARMS_SQL: Final = """
WITH k AS (
    SELECT c.experiment, c.arm, c.currency, c.amount_placed AS placed,
           coalesce(p.collected, 0) AS collected,
           c.state IN ('paid', 'settled') AND coalesce(c.closed_at <= $1, true) AS cured
    FROM cases c
    LEFT JOIN LATERAL (SELECT sum(amount) AS collected FROM payments
                       WHERE loan_id = c.loan_id AND paid_at <= $1) p ON true
    WHERE c.experiment IS NOT NULL AND c.arm IS NOT NULL AND c.opened_at <= $1
      AND ($2::text IS NULL OR c.experiment = $2)
      AND ($3::text IS NULL OR c.experiment IN (
          SELECT experiment FROM cases WHERE policy_name = $3 AND experiment IS NOT NULL))
)
SELECT experiment, arm, currency, count(*) AS cases, sum(placed) AS placed,
       sum(collected) AS collected, count(*) FILTER (WHERE cured) AS cured,
       sum(collected * collected) AS collected_sq, sum(placed * placed) AS placed_sq,
       sum(collected * placed) AS cross_sum
FROM k
GROUP BY 1, 2, 3
ORDER BY 1, 3, 2
"""


def _places(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


@dataclass
class ArmFigures(CaseRates):
    experiment: str
    arm: str  # "champion", or the challenger's policy name
    currency: str
    cases: int
    placed: Decimal
    collected: Decimal
    cured: int
    # For the recovery rate's variance: sums over the arm's cases of c^2, p^2 and c*p.
    collected_sq: Decimal = Decimal(0)
    placed_sq: Decimal = Decimal(0)
    cross_sum: Decimal = Decimal(0)

    def recovery_variance(self) -> float | None:
        """The variance of the arm's recovery rate (ratio estimator); None under 2 cases."""
        if self.cases < 2 or not self.placed:
            return None
        r = float(self.collected) / float(self.placed)
        squares = (float(self.collected_sq) - 2 * r * float(self.cross_sum)
                   + r * r * float(self.placed_sq))
        return max(squares, 0.0) * self.cases / ((self.cases - 1) * float(self.placed) ** 2)

    def cure_variance(self) -> float | None:
        if not self.cases:
            return None
        p = self.cured / self.cases
        return p * (1 - p) / self.cases

    def to_json(self) -> dict[str, Any]:
        plain: dict[str, Any] = jsonable({
            "experiment": self.experiment, "arm": self.arm, "currency": self.currency,
            "cases": self.cases, "placed": self.placed, "collected": self.collected,
            "cured": self.cured, "recovery_rate": self.recovery_rate, "cure_rate": self.cure_rate,
        })
        return plain


@dataclass
class Difference:
    """challenger - champion, with its interval at the report's confidence."""

    estimate: Decimal | None
    low: Decimal | None
    high: Decimal | None


def difference(a: float | None, b: float | None, var_a: float | None, var_b: float | None,
               z: float) -> Difference:
    """b - a and b - a -+ z * sqrt(var_a + var_b); None parts where a figure is missing."""
    if a is None or b is None:
        return Difference(None, None, None)
    diff = b - a
    if var_a is None or var_b is None:
        return Difference(_places(diff), None, None)
    half = z * math.sqrt(var_a + var_b)
    return Difference(_places(diff), _places(diff - half), _places(diff + half))


@dataclass
class ArmComparison:
    experiment: str
    currency: str
    champion: ArmFigures
    challenger: ArmFigures
    recovery: Difference
    cure: Difference
    # False when either arm has fewer cases than the report's minimum: then `note` says which.
    readable: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        plain: dict[str, Any] = jsonable({
            "experiment": self.experiment, "currency": self.currency,
            "champion": self.champion.arm, "challenger": self.challenger.arm,
            "cases": {"champion": self.champion.cases, "challenger": self.challenger.cases},
            "recovery_difference": asdict(self.recovery), "cure_difference": asdict(self.cure),
            "readable": self.readable, "note": self.note,
        })
        return plain


@dataclass
class ExperimentReport:
    as_of: datetime
    min_cases: int
    confidence: float
    arms: list[ArmFigures] = field(default_factory=list)
    comparisons: list[ArmComparison] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(), "min_arm_cases": self.min_cases,
            "confidence": self.confidence, "arms": [a.to_json() for a in self.arms],
            "comparisons": [c.to_json() for c in self.comparisons],
        }


def compare(arms: list[ArmFigures], *, min_cases: int = MIN_ARM_CASES,
            confidence: float = CONFIDENCE) -> list[ArmComparison]:
    """Each challenger arm against its experiment's champion in the same currency."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    champions = {(a.experiment, a.currency): a for a in arms if a.arm == CHAMPION}
    out: list[ArmComparison] = []
    for arm in arms:
        champion = champions.get((arm.experiment, arm.currency))
        if arm.arm == CHAMPION or champion is None:
            continue

        def ratio(a: ArmFigures) -> float | None:
            return float(a.collected) / float(a.placed) if a.placed else None

        def cured(a: ArmFigures) -> float | None:
            return a.cured / a.cases if a.cases else None

        small = [a for a in (champion, arm) if a.cases < min_cases]
        note = "" if not small else "too small to read: " + "; ".join(
            f"{a.arm} has {a.cases:,} case(s), under the minimum of {min_cases:,}" for a in small)
        out.append(ArmComparison(
            experiment=arm.experiment, currency=arm.currency, champion=champion, challenger=arm,
            recovery=difference(ratio(champion), ratio(arm), champion.recovery_variance(),
                                arm.recovery_variance(), z),
            cure=difference(cured(champion), cured(arm), champion.cure_variance(),
                            arm.cure_variance(), z),
            readable=not small, note=note,
        ))
    return out


def _arm(r: Mapping[str, Any]) -> ArmFigures:
    return ArmFigures(
        experiment=r["experiment"], arm=r["arm"], currency=r["currency"].strip(),
        cases=r["cases"], placed=r["placed"], collected=r["collected"], cured=r["cured"],
        collected_sq=r["collected_sq"], placed_sq=r["placed_sq"], cross_sum=r["cross_sum"])


async def experiment_report(
    pool: asyncpg.Pool, *, as_of: datetime | None = None, experiment: str | None = None,
    policy_name: str | None = None, min_cases: int = MIN_ARM_CASES,
    confidence: float = CONFIDENCE,
) -> ExperimentReport:
    """Every experiment's arms as of `as_of` (default: now), champion first in each, and each
    challenger compared with its champion. `experiment` limits it to one experiment;
    `policy_name` to the experiments in which some case follows that policy."""
    as_of = as_utc(as_of) if as_of is not None else datetime.now(UTC)
    matching(experiment, "experiment", POLICY_NAME_RE, "an experiment name")
    matching(policy_name, "policy_name", POLICY_NAME_RE, "a policy name")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    rows = await pool.fetch(_ARMS_SQL, as_of, experiment, policy_name)
    arms = sorted((_arm(r) for r in rows),
                  key=lambda a: (a.experiment, a.currency, a.arm != CHAMPION, a.arm))
    return ExperimentReport(as_of=as_of, min_cases=min_cases, confidence=confidence, arms=arms,
                            comparisons=compare(arms, min_cases=min_cases, confidence=confidence))
