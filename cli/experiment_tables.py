"""Champion/challenger arms as tables: each arm's figures, then each challenger's difference
from its champion with the interval, and a note where an arm is too small to read."""

from __future__ import annotations

from decimal import Decimal

from rich.table import Column, Table
from rich.text import Text

from cli.plumbing import out
from cli.report_tables import percent, utc_time
from service.experiment_report import Difference, ExperimentReport


def points(d: Difference) -> str:
    """A difference in percentage points with its interval: `+2.10 pt [+0.40, +3.80]`."""
    def pt(value: Decimal) -> str:
        return f"{value * 100:+.2f}"

    if d.estimate is None:
        return "-"
    if d.low is None or d.high is None:
        return f"{pt(d.estimate)} pt"
    return f"{pt(d.estimate)} pt [{pt(d.low)}, {pt(d.high)}]"


def print_experiments(report: ExperimentReport) -> None:
    if not report.arms:
        return

    def num(title: str) -> Column:
        return Column(title, justify="right", no_wrap=True)

    arms = Table(Column("experiment", no_wrap=True), "arm", "cur", num("cases"), num("placed"),
                 num("collected"), num("recovery"), num("cured"), num("cure"),
                 title=f"Champion/challenger arms as of {utc_time(report.as_of)} UTC")
    for a in report.arms:
        arms.add_row(a.experiment, a.arm, a.currency, f"{a.cases:,}", f"{a.placed:,}",
                     f"{a.collected:,}", percent(a.recovery_rate), f"{a.cured:,}",
                     percent(a.cure_rate))
    out.print(arms)
    if not report.comparisons:
        return
    level = f"{report.confidence:.0%}"
    diffs = Table(Column("experiment", no_wrap=True), "challenger", "cur",
                  num("cases (champion / challenger)"), num(f"recovery diff [{level} CI]"),
                  num(f"cure diff [{level} CI]"), "reading",
                  title="Challenger minus champion, in percentage points")
    for c in report.comparisons:
        diffs.add_row(c.experiment, c.challenger.arm, c.currency,
                      f"{c.champion.cases:,} / {c.challenger.cases:,}", points(c.recovery),
                      points(c.cure), Text(c.note or "readable"))
    out.print(diffs)
    out.print(f"[dim]an arm under {report.min_cases:,} cases is too small to read; intervals: "
              "normal approximation (two proportions for cure, the ratio estimator for "
              "recovery)[/dim]")
