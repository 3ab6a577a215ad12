"""The report per agency: cases placed, recovery rate, amount recovered, commission, average days
placed and breaches, from the placement rows the cases write (`placements`, migration 007).

Money is summed per agency and currency (amounts of different currencies are never added). The
recovery rate is recovered over the balances placed, to 4 decimal places; the commission is the
sum of each placement's own (each already rounded to the currency's minor unit, half up); days
placed are averaged over the placements that have ended, to one decimal place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from service.currencies import minor_units


@dataclass
class AgencyRow:
    agency_id: str
    currency: str
    cases_placed: int
    open_placements: int
    amount_placed: Decimal
    recovered: Decimal
    recovery_rate: Decimal
    commission: Decimal
    average_days_placed: Decimal | None
    breaches: int


@dataclass
class AgencyReport:
    agencies: list[AgencyRow] = field(default_factory=list)


def _money(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


async def agency_report(pool: asyncpg.Pool, *,
                        loan_ids: Sequence[str] | None = None) -> AgencyReport:
    """Every agency with a placement (of `loan_ids` only, if given)."""
    rows = await pool.fetch(
        """
        SELECT agency_id, currency,
               count(DISTINCT loan_id) AS cases_placed,
               count(*) FILTER (WHERE ended_at IS NULL) AS open_placements,
               sum(amount_at_placement) AS amount_placed,
               sum(recovered) AS recovered,
               sum(commission) AS commission,
               avg(extract(epoch FROM ended_at - placed_at) / 86400)
                   FILTER (WHERE ended_at IS NOT NULL) AS average_days,
               sum(breaches) AS breaches
        FROM placements
        WHERE $1::text[] IS NULL OR loan_id = ANY($1::text[])
        GROUP BY agency_id, currency
        ORDER BY agency_id, currency
        """, list(loan_ids) if loan_ids is not None else None)
    report = AgencyReport()
    for r in rows:
        currency = r["currency"]
        placed, recovered = Decimal(r["amount_placed"]), Decimal(r["recovered"])
        rate = (recovered / placed if placed > 0 else Decimal(0)).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_UP)
        days = r["average_days"]
        report.agencies.append(AgencyRow(
            agency_id=r["agency_id"], currency=currency, cases_placed=int(r["cases_placed"]),
            open_placements=int(r["open_placements"]),
            amount_placed=_money(placed, currency), recovered=_money(recovered, currency),
            recovery_rate=rate, commission=_money(Decimal(r["commission"]), currency),
            average_days_placed=(None if days is None else Decimal(days).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP)),
            breaches=int(r["breaches"])))
    return report


def to_json(report: AgencyReport) -> dict[str, Any]:
    """Plain JSON (money and rates as strings), as `report --json` prints it under `agencies`."""
    return {"agencies": [
        {"agency_id": a.agency_id, "currency": a.currency, "cases_placed": a.cases_placed,
         "open_placements": a.open_placements, "amount_placed": str(a.amount_placed),
         "recovered": str(a.recovered), "recovery_rate": str(a.recovery_rate),
         "commission": str(a.commission),
         "average_days_placed": (None if a.average_days_placed is None
                                 else str(a.average_days_placed)),
         "breaches": a.breaches}
        for a in report.agencies]}
