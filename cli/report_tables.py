"""The portfolio report as tables: money and rates, roll rates, cases by state, then compliance
breaches by rule and unapplied money by currency."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from rich.table import Column, Table

from cli.plumbing import out
from contracts.messages import CaseState
from service.report_figures import ROLL_TRANSITIONS, Report, SegmentFigures


def percent(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def utc_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_report(report: Report) -> None:
    if not report.rows:
        out.print(f"no cases opened by {utc_time(report.as_of)} UTC")
        return
    rows = [*report.rows]
    versions = report.by_policy_version()
    if len(versions) < len(rows):
        rows += versions  # segment "*": the policy version as a whole

    def name(r: SegmentFigures) -> str:
        return f"{r.policy_name}@{r.policy_version} {r.currency}"

    def head(title: str) -> Column:
        return Column(title, no_wrap=True)

    def num(title: str) -> Column:
        return Column(title, justify="right", no_wrap=True)

    money = Table(head("policy"), head("segment"), num("cases"), num("placed"), num("collected"),
                  num("recovery"), num("cure"), num("kept"), num("contacts/cure"),
                  title=f"Portfolio as of {utc_time(report.as_of)} UTC")
    for r in rows:
        money.add_row(name(r), r.segment, f"{r.cases:,}", f"{r.placed:,}", f"{r.collected:,}",
                      percent(r.recovery_rate), percent(r.cure_rate), percent(r.promise_kept_rate),
                      "-" if r.contacts_per_cure is None else f"{r.contacts_per_cure:.2f}")
    out.print(money)
    out.print("[dim]recovery: collected / placed; cure: paid or settled / cases; kept: promises "
              "kept / promises kept or broken; contacts/cure: contacts made / cured cases[/dim]")
    rolls = Table(head("policy"), head("segment"),
                  *[num(t.replace("->", "→")) for t in ROLL_TRANSITIONS],
                  title="Roll rates (of the cases that entered a stage, the share that moved on "
                        "to a worse one)")
    for r in rows:
        rolls.add_row(name(r), r.segment, *[percent(v) for v in r.roll_rates.values()])
    out.print(rolls)
    states = [s for s in (*(c.value for c in CaseState), "other")
              if any(s in r.by_state for r in rows)]
    by_state = Table(head("policy"), head("segment"), *[num(s) for s in states],
                     title="Cases by state")
    for r in rows:
        by_state.add_row(name(r), r.segment, *[f"{r.by_state.get(s, 0):,}" for s in states])
    out.print(by_state)
    print_compliance(report)


def print_compliance(report: Report) -> None:
    """Breaches by the rule broken, and unapplied money per currency; one line when neither."""
    if not report.breaches and not report.unapplied:
        out.print("no compliance breaches; no unapplied payments")
        return
    if report.breaches:
        breaches = Table(Column("rule broken", no_wrap=True),
                         Column("breaches", justify="right", no_wrap=True),
                         title=f"Compliance breaches: {report.breach_total:,} agent call(s) or "
                               "visit(s) outside the window or over a cap")
        for rule, n in report.breaches.items():
            breaches.add_row(rule, f"{n:,}")
        out.print(breaches)
    else:
        out.print("no compliance breaches")
    if report.unapplied:
        money = Table(Column("currency", no_wrap=True),
                      Column("payments", justify="right", no_wrap=True),
                      Column("amount", justify="right", no_wrap=True),
                      title="Unapplied payments (received, not applied: see each case's history)")
        for u in report.unapplied:
            money.add_row(u.currency, f"{u.count:,}", f"{u.amount:,}")
        out.print(money)
    else:
        out.print("no unapplied payments")
