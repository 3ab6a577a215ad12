"""Portfolio figures aggregated in PostgreSQL: recovery, cure, roll and promise-kept rates per
policy version and segment, a monthly series, compliance breaches and unapplied money.

As of now they are read from the rollup the database keeps current
(infra/migrations/003_report_rollup.sql); as of an earlier time, from scans of the base tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg

from contracts.messages import CaseState
from service import agency_report
from service.case_filters import POLICY_NAME_RE, matching
from service.report_figures import (
    ROLL_TRANSITIONS,
    STAGE_RANKS,
    Report,
    SegmentFigures,
    SeriesPoint,
    UnappliedMoney,
)
from service.shapes import as_utc

log = logging.getLogger(__name__)

CURED_STATES: Final = (CaseState.PAID.value, CaseState.SETTLED.value)


_STATES: Final = [s.value for s in CaseState]
_RANK_CASE: Final = "CASE {} " + " ".join(
    f"WHEN '{s}' THEN {i}" for i, s in enumerate(STAGE_RANKS)) + " END"
_SCOPE: Final = "c.opened_at <= $1 AND ($2::text IS NULL OR c.policy_name = $2)"
_KEYS: Final = "c.policy_name, c.policy_version, c.segment, c.currency"

# Five aggregations, each one pass over one table joined to `cases`; Python adds up their small
# results. Months are calendar months in UTC. A case closed after `as_of` counts as active.
_CASES_SQL: Final = f"""
SELECT {_KEYS}, date_trunc('month', c.opened_at AT TIME ZONE 'UTC')::date AS month,
       CASE WHEN c.closed_at > $1 THEN 'active' ELSE c.state END AS state,
       count(*) AS cases, sum(c.amount_placed) AS placed, sum(c.outstanding) AS outstanding
FROM cases c
WHERE {_SCOPE}
GROUP BY 1, 2, 3, 4, 5, 6
"""

_PAYMENTS_SQL: Final = f"""
SELECT {_KEYS}, date_trunc('month', p.paid_at AT TIME ZONE 'UTC')::date AS month,
       sum(p.amount) AS collected
FROM payments p JOIN cases c ON c.loan_id = p.loan_id
WHERE {_SCOPE} AND p.paid_at <= $1
GROUP BY 1, 2, 3, 4, 5
"""

_PROMISES_SQL: Final = f"""
SELECT {_KEYS}, e.kind, count(*) AS n
FROM events e JOIN cases c ON c.loan_id = e.loan_id
WHERE {_SCOPE} AND e.kind IN ('promise_kept', 'promise_broken') AND e.occurred_at <= $1
GROUP BY 1, 2, 3, 4, 5
"""

_CONTACTS_SQL: Final = f"""
SELECT {_KEYS}, count(*) AS n
FROM contacts k JOIN cases c ON c.loan_id = k.loan_id
WHERE {_SCOPE} AND k.decision = 'sent' AND k.occurred_at <= $1
GROUP BY 1, 2, 3, 4
"""

# One span per stage a case entered: from the stage_history row that entered it to the next row
# of that case (a worse stage, or `closed`), cut short when the case closed (paid, settled) and at
# `as_of`. `rolled`: the next row is a worse stage. The workflow only ever moves a case forward and
# writes each change once, so each case has at most one span per stage.
_SPANS_SQL: Final = f"""
WITH s AS (
    SELECT loan_id, {_RANK_CASE.format("to_stage")} AS rank, occurred_at AS entered_at,
           lead(occurred_at) OVER w AS left_at,
           {_RANK_CASE.format("lead(to_stage) OVER w")} AS next_rank
    FROM stage_history
    WHERE occurred_at <= $1
    WINDOW w AS (PARTITION BY loan_id ORDER BY occurred_at, id)
)
SELECT {_KEYS}, s.rank,
       date_trunc('month', s.entered_at AT TIME ZONE 'UTC')::date AS first_month,
       date_trunc('month', LEAST(coalesce(s.left_at, $1), coalesce(c.closed_at, $1), $1)
                  AT TIME ZONE 'UTC')::date AS last_month,
       coalesce(s.next_rank > s.rank, false) AS rolled,
       count(*) AS n
FROM s JOIN cases c ON c.loan_id = s.loan_id
WHERE {_SCOPE} AND s.rank IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""

# Compliance breaches and unapplied money, straight from their tables (both are small and have
# partial indexes: infra/migrations/005_compliance.sql); the figures above are untouched. Breaches
# are counted when the call happened, unapplied money when it was received; money a later report
# of the same payment id applied ('resolved') no longer counts.
_BREACHES_SQL: Final = """
SELECT k.rule, count(*) AS n
FROM contacts k LEFT JOIN cases c ON c.loan_id = k.loan_id
WHERE k.decision = 'breach' AND k.occurred_at <= $1 AND ($2::text IS NULL OR c.policy_name = $2)
GROUP BY 1
"""

_UNAPPLIED_SQL: Final = """
SELECT u.currency, count(*) AS n, sum(u.amount) AS amount
FROM unapplied_payments u LEFT JOIN cases c ON c.loan_id = u.loan_id
WHERE u.status = 'unapplied' AND u.received_at <= $1
      AND ($2::text IS NULL OR c.policy_name = $2)
GROUP BY 1
"""

# Large enough for the hash tables of a 100,000-case book to stay in memory; this transaction only.
_REPORT_WORK_MEM: Final = "64MB"

# The same five aggregations from the rollup (infra/migrations/003_report_rollup.sql): the
# groups triggers keep current, plus the deltas not folded in yet, read in one snapshot. They hold
# the figures as of a time after every row they count (`report_loans.latest`); a report as of an
# earlier time scans.
_HORIZON_SQL: Final = "SELECT max(latest) FROM report_loans"
_POLICY_HORIZON_SQL: Final = "SELECT max(latest) FROM report_loans WHERE policy_name = $1"
_ROLLUP_SQL: Final = """
SELECT policy_name, policy_version, segment, currency, part, month, state, rank,
       CASE WHEN last_month = 'infinity' THEN report_month($1) ELSE last_month END AS last_month,
       rolled, sum(n)::bigint AS n, sum(placed) AS placed, sum(outstanding) AS outstanding,
       sum(amount) AS amount
FROM (SELECT policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
             rolled, n, placed, outstanding, amount FROM report_rollup
      UNION ALL
      SELECT policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
             rolled, n, placed, outstanding, amount FROM report_delta) r
WHERE $2::text IS NULL OR policy_name = $2
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
HAVING sum(n) <> 0
"""

_Rows = list[Mapping[str, Any]]


async def _rollup_rows(
    pool: asyncpg.Pool, as_of: datetime, policy_name: str | None,
) -> tuple[_Rows, _Rows, _Rows, _Rows, _Rows] | None:
    """The rows of the five aggregations from the rollup, or None when it cannot answer."""
    try:
        async with (pool.acquire() as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True)):
            if policy_name is None:
                horizon = await conn.fetchval(_HORIZON_SQL)
            else:
                horizon = await conn.fetchval(_POLICY_HORIZON_SQL, policy_name)
            if horizon is not None and horizon > as_of:
                return None
            rows = await conn.fetch(_ROLLUP_SQL, as_of, policy_name)
    except asyncpg.UndefinedTableError:
        log.warning("no report rollup in this database (migration 003 not applied); scanning")
        return None
    cases: _Rows = []
    payments: _Rows = []
    promises: _Rows = []
    contacts: _Rows = []
    spans: _Rows = []
    for r in rows:
        key = {k: r[k] for k in ("policy_name", "policy_version", "segment", "currency")}
        part = r["part"]
        if part == "case":
            cases.append({**key, "month": r["month"], "state": r["state"], "cases": r["n"],
                          "placed": r["placed"], "outstanding": r["outstanding"]})
        elif part == "payment":
            payments.append({**key, "month": r["month"], "collected": r["amount"]})
        elif part in ("promise_kept", "promise_broken"):
            promises.append({**key, "kind": part, "n": r["n"]})
        elif part == "contact_sent":
            contacts.append({**key, "n": r["n"]})
        elif part == "span":
            spans.append({**key, "rank": r["rank"], "first_month": r["month"],
                          "last_month": r["last_month"], "rolled": r["rolled"], "n": r["n"]})
    return cases, payments, promises, contacts, spans



def _month_range(first: date, last: date) -> list[date]:
    months = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        months.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


_SegKey = tuple[str, str, str, str]  # policy name, version, segment, currency
_SerKey = tuple[str, str, str]  # policy name, version, currency


def _seg_key(r: Mapping[str, Any]) -> _SegKey:
    return r["policy_name"], r["policy_version"], r["segment"], r["currency"].strip()


async def portfolio_report(
    pool: asyncpg.Pool, *, as_of: datetime | None = None, policy_name: str | None = None,
    rollup: bool = True,
) -> Report:
    """Figures per (policy name, policy version, segment, currency) as of `as_of` (default: now),
    from PostgreSQL, plus a monthly series per policy version.

    - recovery rate: payments made by `as_of` over the amount placed;
    - cure rate: cases paid or settled by `as_of` over cases opened by then;
    - roll rate x->y: of the cases that ever entered stage x (stage_history), the share whose next
      stage was worse than x (y, or a later one when the case skipped y: a case opened at 40 days
      past due goes early -> late);
    - promise kept rate: `promise_kept` events over `promise_kept` + `promise_broken` events;
    - contacts per cure: contacts actually made (decision 'sent') over cured cases;
    - breaches: agent calls and visits made by `as_of` outside the rule pack's window or over a
      cap, by the rule broken; unapplied: money received by `as_of` that the cases could not
      apply (another currency, not positive) and that is still unapplied, count and sum per
      currency.
    The series gives, per month, cumulative recovery (collected to date over placed to date) and
    monthly roll rates (of the cases in stage x at some time in the month, the share that moved
    to a worse stage in that month). Currencies are never added together: currency is part of
    every group. `policy_name` limits the report to one policy.

    As of now (or any time after the last row of the cases reported), the figures come from the
    rollup the database keeps (a few thousand rows); as of an earlier time, or with `rollup`
    False, from scans of the base tables. Both give the same figures.
    """
    as_of = as_utc(as_of) if as_of is not None else datetime.now(UTC)
    if policy_name is not None:
        matching(policy_name, "policy_name", POLICY_NAME_RE, "a policy name")

    async def fetch(sql: str) -> list[asyncpg.Record]:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL work_mem = '{_REPORT_WORK_MEM}'")
            rows: list[asyncpg.Record] = await conn.fetch(sql, as_of, policy_name)
            return rows

    rolled_up = await _rollup_rows(pool, as_of, policy_name) if rollup else None
    if rolled_up is None:
        rolled_up = await asyncio.gather(
            fetch(_CASES_SQL), fetch(_PAYMENTS_SQL), fetch(_PROMISES_SQL), fetch(_CONTACTS_SQL),
            fetch(_SPANS_SQL),
        )
    breach_rows, unapplied_rows = await asyncio.gather(fetch(_BREACHES_SQL), fetch(_UNAPPLIED_SQL))
    case_rows, payment_rows, promise_rows, contact_rows, span_rows = rolled_up
    rows: dict[_SegKey, SegmentFigures] = {}
    for r in case_rows:
        k = _seg_key(r)
        f = rows.get(k)
        if f is None:
            f = rows[k] = SegmentFigures(
                policy_name=k[0], policy_version=k[1], segment=k[2], currency=k[3], cases=0,
                placed=Decimal("0"), collected=Decimal("0"), outstanding=Decimal("0"), cured=0,
                promises_kept=0, promises_broken=0, contacts_sent=0,
                reached=dict.fromkeys(STAGE_RANKS, 0), rolled=dict.fromkeys(ROLL_TRANSITIONS, 0),
                by_state={},
            )
        f.cases += r["cases"]
        f.placed += r["placed"]
        f.outstanding += r["outstanding"]
        state = r["state"] if r["state"] in _STATES else "other"
        f.by_state[state] = f.by_state.get(state, 0) + r["cases"]
        if state in CURED_STATES:
            f.cured += r["cases"]
    for r in payment_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.collected += r["collected"]
    for r in promise_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            if r["kind"] == "promise_kept":
                f.promises_kept += r["n"]
            else:
                f.promises_broken += r["n"]
    for r in contact_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.contacts_sent += r["n"]
    for r in span_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.reached[STAGE_RANKS[r["rank"]]] += r["n"]
            if r["rolled"] and r["rank"] < len(ROLL_TRANSITIONS):
                f.rolled[ROLL_TRANSITIONS[r["rank"]]] += r["n"]
    for f in rows.values():
        f.by_state = dict(sorted(f.by_state.items(), key=lambda kv: (
            _STATES.index(kv[0]) if kv[0] in _STATES else len(_STATES))))
    breaches = sorted(((r["rule"] or "unknown", r["n"]) for r in breach_rows),
                      key=lambda kv: (-kv[1], kv[0]))
    unapplied = [UnappliedMoney(currency=r["currency"].strip(), count=r["n"], amount=r["amount"])
                 for r in sorted(unapplied_rows, key=lambda r: r["currency"])]
    # Per agency (issue 19): service/agency_report.py, from the placement rows.
    agencies = agency_report.to_json(await agency_report.agency_report(pool))["agencies"]
    return Report(as_of=as_of, rows=[rows[k] for k in sorted(rows)],
                  series=_series(as_of, case_rows, payment_rows, span_rows),
                  breaches=dict(breaches), unapplied=unapplied, agencies=agencies)


def _series(as_of: datetime, case_rows: Sequence[Mapping[str, Any]],
            payment_rows: Sequence[Mapping[str, Any]],
            span_rows: Sequence[Mapping[str, Any]]) -> list[SeriesPoint]:
    def key(r: Mapping[str, Any]) -> _SerKey:
        return r["policy_name"], r["policy_version"], r["currency"].strip()

    opened: dict[_SerKey, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    placed: dict[_SerKey, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in case_rows:
        opened[key(r)][r["month"]] += r["cases"]
        placed[key(r)][r["month"]] += r["placed"]
    collected: dict[_SerKey, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in payment_rows:
        collected[key(r)][r["month"]] += r["collected"]
    # month -> rank -> cases in that stage during the month / cases that rolled out of it then
    in_stage: dict[_SerKey, dict[date, dict[int, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int)))
    rolled: dict[_SerKey, dict[date, dict[int, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int)))
    for r in span_rows:
        rank = r["rank"]
        if rank >= len(ROLL_TRANSITIONS):
            continue
        for month in _month_range(r["first_month"], r["last_month"]):
            in_stage[key(r)][month][rank] += r["n"]
        if r["rolled"]:
            rolled[key(r)][r["last_month"]][rank] += r["n"]
    points: list[SeriesPoint] = []
    last = as_of.date()
    for k in sorted(opened):
        cum_placed = cum_collected = Decimal("0")
        for month in _month_range(min(opened[k]), last):
            cum_placed += placed[k].get(month, Decimal("0"))
            cum_collected += collected[k].get(month, Decimal("0"))
            stages = in_stage[k].get(month, {})
            rolls = rolled[k].get(month, {})
            points.append(SeriesPoint(
                month=month, policy_name=k[0], policy_version=k[1], currency=k[2],
                opened=opened[k].get(month, 0), placed=placed[k].get(month, Decimal("0")),
                collected=collected[k].get(month, Decimal("0")), cumulative_placed=cum_placed,
                cumulative_collected=cum_collected,
                in_stage={STAGE_RANKS[i]: stages.get(i, 0) for i in range(len(ROLL_TRANSITIONS))},
                rolled={t: rolls.get(i, 0) for i, t in enumerate(ROLL_TRANSITIONS)},
            ))
    return points
