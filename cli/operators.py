"""What operators ask: one case (status, history), lists of cases, the portfolio report.

    collect list --stage legal --min-outstanding 10000
    collect list --state active --agent a.chen --source db --json
    collect history L1001 --json > L1001-audit.json
    collect report --chart report.png
"""

from __future__ import annotations

import shlex
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from cli.arguments import JsonFlag, LoanArg
from cli.experiment_tables import print_experiments
from cli.plumbing import (
    Commands,
    complain,
    echo_json,
    err,
    out,
    reflow,
    run,
    show_json,
    when,
    with_temporal,
)
from cli.report_tables import print_report, utc_time
from cli.status_panel import status_panel
from contracts.messages import CaseStatus, TimelineEvent
from service import cases, experiment_report, listing
from service import history as case_history
from service import report as portfolio
from service.case_filters import list_limit, visibility_query
from service.connection import Connections
from service.erasure import erased_when
from service.errors import Unreachable
from service.history import HistoryEntry
from service.listing import CaseRow
from service.report_chart import check_chart_target, render_chart
from service.report_figures import Report
from service.values import parse_instant, parse_loan_id


class OperatorCommands(Commands):
    """The operators' verbs; `timeline`, the old name of `history --source workflow`, is kept
    for scripts and hidden from --help."""

    def register(self, app: typer.Typer) -> None:
        for name, fn in self._commands:
            app.command(name, help=reflow(fn.__doc__), rich_help_panel=self.panel,
                        hidden=name == "timeline")(fn)


commands = OperatorCommands("Operators")


class Source(StrEnum):
    TEMPORAL = "temporal"
    DB = "db"


class HistorySource(StrEnum):
    ALL = "all"
    WORKFLOW = "workflow"


@commands.command()
def status(loan: LoanArg, as_json: JsonFlag = False) -> None:
    """Show a case: state, stage, balance, next action, open arrangements, contacts, policy.

        collect status CN-1001
    """
    loan_id = parse_loan_id(loan, "loan")

    async def read(c: Connections) -> tuple[CaseStatus, datetime | None]:
        case = await cases.status(await c.temporal(), loan_id)
        return case, await erased_when(c, loan_id)

    case, erased = run(read)
    if as_json:
        show_json(case, CaseStatus)
    else:
        out.print(status_panel(case))
        if erased is not None:  # issue 18: a deletion request or the retention purge
            out.print(f"borrower: erased (personal data erased {erased:%Y-%m-%d %H:%M} UTC)")


@commands.command("timeline")
def timeline(loan: LoanArg, as_json: JsonFlag = False) -> None:
    """Same as `history LOAN --source workflow`.

        collect history CN-1001 --source workflow
    """
    workflow_timeline(parse_loan_id(loan, "loan"), as_json)


def workflow_timeline(loan_id: str, as_json: bool) -> None:
    """The workflow's own timeline, from its worker, with the rule behind each decision."""
    events = with_temporal(lambda client: cases.timeline(client, loan_id))
    if as_json:
        show_json(events, list[TimelineEvent])
        return
    table = Table("at", "event", "summary", "rule", "by", title=f"loan {loan_id}",
                  title_justify="left")
    for e in events:
        table.add_row(when(e.at), e.kind, Text(e.summary), e.rule or "", e.actor or "")
    out.print(table)


def _shell_query(query: str) -> str:
    """The query as one shell word: validated values hold no double quote, $, ` or backslash."""
    return shlex.quote(query) if any(ch in query for ch in '"$`\\') else f'"{query}"'


@commands.command("list")
def list_cases(
    stage: Annotated[str | None, typer.Option(
        help="pre_due, early, middle, late, legal, written_off, closed")] = None,
    state: Annotated[str | None, typer.Option(
        help="active, paid, settled, written_off, closed, or failed (a start whose input "
             "broke the loan rules: never opened, so Temporal only)")] = None,
    min_outstanding: Annotated[int | None, typer.Option(
        help="Balance at least this many whole units.")] = None,
    max_outstanding: Annotated[int | None, typer.Option(
        help="Balance at most this many whole units.")] = None,
    min_dpd: Annotated[int | None, typer.Option(
        help="Days past due at least (negative: before due).")] = None,
    max_dpd: Annotated[int | None, typer.Option(help="Days past due at most.")] = None,
    agent: Annotated[str | None, typer.Option(help="Assigned agent.")] = None,
    policy_version: Annotated[str | None, typer.Option(
        help="name@version, or a policy name for all its versions.")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code.")] = None,
    arm: Annotated[str | None, typer.Option(
        help="experiment:arm (champion or a challenger's policy name), or an experiment name "
             "for all its arms.")] = None,
    source: Annotated[Source, typer.Option(
        help="Temporal visibility, or the cases table.")] = Source.TEMPORAL,
    limit: Annotated[int, typer.Option(help="At most this many cases.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
) -> None:
    """Cases matching every filter given. From Temporal (most recently started first; a second or
    so behind the cases) or from PostgreSQL with --source db (largest balance first). Prints the
    equivalent query for `temporal workflow list --query` and the Web UI's search box.

        collect list --state active --min-dpd 1
    """
    filters: dict[str, Any] = dict(
        stage=stage, state=state, min_outstanding=min_outstanding,
        max_outstanding=max_outstanding, min_dpd=min_dpd, max_dpd=max_dpd, agent=agent,
        policy_version=policy_version, currency=currency, arm=arm)
    query = visibility_query(**filters)
    limit = list_limit(limit)  # before connecting: --limit 0 or -1 is bad input, not a query

    async def read(c: Connections) -> list[CaseRow]:
        if source == Source.DB:
            return await listing.list_cases_db(await c.pool(), limit=limit, **filters)
        return await listing.list_cases(await c.temporal(), limit=limit, **filters)

    rows = run(read)
    if as_json:
        echo_json([{**vars(r), "outstanding": None if r.outstanding is None else str(r.outstanding)}
                   for r in rows])
        err.print(f"temporal workflow list --query {_shell_query(query)}", soft_wrap=True)
        return
    origin = "Temporal" if source == Source.TEMPORAL else "PostgreSQL"
    arms = any(r.arm for r in rows)  # an experiment's arm column only where a case has one
    table = Table(Column("loan", no_wrap=True), "state", "stage", Column("dpd", justify="right"),
                  Column("outstanding", justify="right"), "cur", "agent", "policy",
                  *(["arm"] if arms else []), title=f"{len(rows)} case(s) from {origin}")
    for r in rows:
        table.add_row(r.loan_id, r.state or "-", r.stage or "-",
                      "-" if r.days_past_due is None else str(r.days_past_due),
                      "-" if r.outstanding is None else f"{r.outstanding:,}",
                      r.currency or "-", r.agent or "-", r.policy_version or "-",
                      *([r.arm or "-"] if arms else []))
    out.print(table)
    for r in rows:
        if r.failure:
            out.print(Text(f"loan {r.loan_id}: start failed: {r.failure}"), soft_wrap=True)
    if len(rows) == limit:
        out.print(f"[dim]showing the first {limit}; raise --limit for more[/dim]")
    out.print("Same filter in the Temporal CLI (or paste the quoted part into the Web UI):")
    out.print(f"  temporal workflow list --query {_shell_query(query)}", soft_wrap=True)


@commands.command()
def history(
    loan: LoanArg,
    as_json: Annotated[bool, typer.Option(
        "--json", help="A JSON array for audits: ISO times, amounts as strings.")] = False,
    no_query: Annotated[bool, typer.Option(
        "--no-query", help="Read the Temporal event history instead of asking a worker.")] = False,
    source: Annotated[HistorySource, typer.Option(
        help="all: the workflow's timeline merged with PostgreSQL's records; workflow: the "
             "workflow's own timeline only, from its worker (no database needed).")
    ] = HistorySource.ALL,
) -> None:
    """One case's history, oldest first. By default the workflow's timeline (from its worker, or
    from its Temporal event history across continue-as-new runs) merged with what PostgreSQL
    recorded: events, contacts, payments, tasks and legal actions, each event once, with the
    source of each. With --source workflow, only what the workflow itself holds, with the rule
    and actor behind each decision (what the `timeline` verb used to show).

        collect history CN-1001
        collect history CN-1001 --source workflow --json
    """
    loan_id = parse_loan_id(loan, "loan")
    if source == HistorySource.WORKFLOW:
        workflow_timeline(loan_id, as_json)
        return

    async def read(c: Connections) -> list[HistoryEntry]:
        pool = await c.pool()
        try:
            client = await c.temporal()
        except Unreachable as exc:
            complain(f"{exc}; showing PostgreSQL's records only", "yellow")
            client = None
        return await case_history.history(client, pool, loan_id, use_query=not no_query)

    entries = run(read)
    if as_json:
        echo_json([e.to_json() for e in entries])
        return
    table = Table(Column("time (UTC)", no_wrap=True), "source", Column("kind", no_wrap=True),
                  Column("summary", overflow="fold"), "rule / actor",
                  title=f"Loan {loan_id}: {len(entries)} entries")
    for e in entries:
        who = " / ".join(x for x in (e.rule, e.actor) if x)
        table.add_row(utc_time(e.at), e.source, e.kind, e.summary, who or "")
    out.print(table)


@commands.command()
def report(
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON on stdout.")] = False,
    chart: Annotated[Path | None, typer.Option(help="Also write a PNG chart here.")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="ISO date-time with offset (default: now).")] = None,
    policy: Annotated[str | None, typer.Option(help="Only this policy (name).")] = None,
    min_arm_cases: Annotated[int, typer.Option(
        min=1, help="Champion/challenger: an arm with fewer cases is too small to read.")
    ] = experiment_report.MIN_ARM_CASES,
) -> None:
    """Portfolio figures per policy version and segment, from PostgreSQL: cases, amount placed,
    collected, recovery, cure, promise-kept and roll rates, contacts per cured case, cases by
    state; and a monthly series of recovery and roll rates (in --json and the --chart). Then
    champion/challenger arms side by side: each challenger's difference from its champion in
    recovery and cure rate, with a 95% interval and the cases behind each arm.

        collect report --chart report.png
    """
    moment = parse_instant(as_of, "as_of") if as_of is not None else None
    if chart is not None:
        check_chart_target(chart)  # before reading: a chart that cannot be written is bad input

    async def read(c: Connections) -> tuple[Report, experiment_report.ExperimentReport]:
        pool = await c.pool()
        return (await portfolio.portfolio_report(pool, as_of=moment, policy_name=policy),
                await experiment_report.experiment_report(
                    pool, as_of=moment, policy_name=policy, min_cases=min_arm_cases))

    figures, arms = run(read)
    if chart is not None:
        render_chart(figures, chart)
    if as_json:
        echo_json({**figures.to_json(), "experiments": arms.to_json()})
        if chart is not None:
            err.print(f"chart written to {chart}")
        return
    print_report(figures)
    print_experiments(arms)
    if chart is not None:
        out.print(f"chart written to {chart}")
