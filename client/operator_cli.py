"""Operator commands for the main CLI (`starter.py`): `list`, `history`, `report`.

    python starter.py list --stage legal --min-outstanding 10000
    python starter.py list --state active --agent a.chen --source db --json
    python starter.py history L1001 --json > L1001-audit.json
    python starter.py report --chart report.png

`list` reads Temporal visibility (or the `cases` table with `--source db`) and prints the same
filter as a query for `temporal workflow list --query` and the Web UI. `history` merges the
workflow's timeline with what PostgreSQL recorded. `report` aggregates PostgreSQL.
Exit codes: 0 done, 1 failed, 2 bad input.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from client import operator as op
from infra.settings import Settings
from contracts.messages import CaseState

T = TypeVar("T")
PANEL = "Operator views"

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Source(StrEnum):
    TEMPORAL = "temporal"
    DB = "db"


# --------------------------------------------------------------------------- plumbing


def _fail(message: str, code: int) -> NoReturn:
    err.print(Text(message, style="red"), soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"configuration: {'.'.join(map(str, first['loc'])).upper()}: {first['msg']}", 2)


async def _pool(settings: Settings) -> asyncpg.Pool:
    from client.operations import OperationError, database_url

    dsn = database_url(settings)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise OperationError(f"cannot reach the database: {type(exc).__name__}") from None
    assert pool is not None
    return pool


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run one command's work; bad input exits 2, a failure exits 1, one red line each."""
    from client.operations import OperationError

    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except op.FilterError as exc:
        _fail(str(exc), 2)
    except OperationError as exc:
        _fail(str(exc), 1)
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"database error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1)


def _echo_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _shell_query(query: str) -> str:
    """The query as one shell word: validated values hold no double quote, $, ` or backslash."""
    if any(ch in query for ch in '"$`\\'):
        import shlex

        return shlex.quote(query)
    return f'"{query}"'


# --------------------------------------------------------------------------- list


def list_command(
    stage: Annotated[str | None, typer.Option(help="pre_due, early, middle, late, legal, written_off, closed")] = None,
    state: Annotated[str | None, typer.Option(help="active, paid, settled, written_off, closed")] = None,
    min_outstanding: Annotated[int | None, typer.Option(help="Balance at least this many whole units.")] = None,
    max_outstanding: Annotated[int | None, typer.Option(help="Balance at most this many whole units.")] = None,
    min_dpd: Annotated[int | None, typer.Option(help="Days past due at least (negative: before due).")] = None,
    max_dpd: Annotated[int | None, typer.Option(help="Days past due at most.")] = None,
    agent: Annotated[str | None, typer.Option(help="Assigned agent.")] = None,
    policy_version: Annotated[str | None, typer.Option(help="name@version, or a policy name for all its versions.")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code.")] = None,
    source: Annotated[Source, typer.Option(help="Temporal visibility, or the cases table.")] = Source.TEMPORAL,
    limit: Annotated[int, typer.Option(help="At most this many cases.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
) -> None:
    """Cases matching every filter given. From Temporal (most recently started first; a second or
    so behind the cases) or from PostgreSQL with --source db (largest balance first). Prints the
    equivalent query for `temporal workflow list --query` and the Web UI's search box."""
    filters = dict(stage=stage, state=state, min_outstanding=min_outstanding,
                   max_outstanding=max_outstanding, min_dpd=min_dpd, max_dpd=max_dpd, agent=agent,
                   policy_version=policy_version, currency=currency)

    async def work() -> tuple[str, list[op.CaseRow]]:
        query = op.visibility_query(**filters)
        settings = _settings()
        if source == Source.DB:
            pool = await _pool(settings)
            try:
                return query, await op.list_cases_db(pool, limit=limit, **filters)
            finally:
                await pool.close()
        from client.operations import connect

        client = await connect(settings)
        return query, await op.list_cases(client, limit=limit, **filters)

    query, rows = _run(work)
    if as_json:
        _echo_json([{**{k: v for k, v in vars(r).items()},
                     "outstanding": None if r.outstanding is None else str(r.outstanding)}
                    for r in rows])
        err.print(f"temporal workflow list --query {_shell_query(query)}", soft_wrap=True)
        return
    table = Table(Column("loan", no_wrap=True), "state", "stage", Column("dpd", justify="right"),
                  Column("outstanding", justify="right"), "cur", "agent", "policy",
                  title=f"{len(rows)} case(s) from {'Temporal' if source == Source.TEMPORAL else 'PostgreSQL'}")
    for r in rows:
        table.add_row(r.loan_id, r.state or "-", r.stage or "-",
                      "-" if r.days_past_due is None else str(r.days_past_due),
                      "-" if r.outstanding is None else f"{r.outstanding:,}",
                      r.currency or "-", r.agent or "-", r.policy_version or "-")
    out.print(table)
    if len(rows) == limit:
        out.print(f"[dim]showing the first {limit}; raise --limit for more[/dim]")
    out.print("Same filter in the Temporal CLI (or paste the quoted part into the Web UI):")
    out.print(f"  temporal workflow list --query {_shell_query(query)}", soft_wrap=True)


# --------------------------------------------------------------------------- history


def history_command(
    loan_id: Annotated[str, typer.Argument(help="The loan id.")],
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array for audits: ISO times, amounts as strings.")] = False,
    no_query: Annotated[bool, typer.Option("--no-query", help="Read the Temporal event history instead of asking a worker.")] = False,
) -> None:
    """One case's history, oldest first: the workflow's timeline (from its worker, or from its
    Temporal event history across continue-as-new runs) merged with what PostgreSQL recorded:
    events, contacts, payments, tasks and legal actions. Each event appears once."""
    from client.operations import UnreachableError, connect
    from client.validation import InputError, parse_loan_id

    try:
        loan = parse_loan_id(loan_id)
    except InputError as exc:
        _fail(str(exc), 2)

    async def work() -> list[op.HistoryEntry]:
        settings = _settings()
        try:
            client = await connect(settings)
        except UnreachableError as exc:
            err.print(Text(f"{exc}; showing PostgreSQL's records only", style="yellow"), soft_wrap=True)
            client = None
        pool = await _pool(settings)
        try:
            return await op.history(client, pool, loan, use_query=not no_query)
        finally:
            await pool.close()

    entries = _run(work)
    if as_json:
        _echo_json([e.to_json() for e in entries])
        return
    table = Table(Column("time (UTC)", no_wrap=True), "source", Column("kind", no_wrap=True),
                  Column("summary", overflow="fold"), "rule / actor",
                  title=f"Loan {loan}: {len(entries)} entries")
    for e in entries:
        who = " / ".join(x for x in (e.rule, e.actor) if x)
        table.add_row(_when(e.at), e.source, e.kind, e.summary, who or "")
    out.print(table)


# --------------------------------------------------------------------------- report


def report_command(
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON on stdout.")] = False,
    chart: Annotated[Path | None, typer.Option(help="Also write a PNG chart here.")] = None,
    as_of: Annotated[str | None, typer.Option(help="ISO date-time with offset (default: now).")] = None,
    policy: Annotated[str | None, typer.Option(help="Only this policy (name).")] = None,
) -> None:
    """Portfolio figures per policy version and segment, from PostgreSQL: cases, amount placed,
    collected, recovery, cure, promise-kept and roll rates, contacts per cured case, cases by
    state; and a monthly series of recovery and roll rates (in --json and the --chart)."""
    when: datetime | None = None
    if as_of is not None:
        try:
            when = datetime.fromisoformat(as_of.strip())
        except ValueError:
            _fail(f"--as-of: {as_of[:40]!r} is not an ISO date-time", 2)
        if when.tzinfo is None:
            _fail("--as-of: give a UTC offset, e.g. 2026-06-30T23:59:59+08:00 or Z", 2)

    async def work() -> op.Report:
        pool = await _pool(_settings())
        try:
            return await op.portfolio_report(pool, as_of=when, policy_name=policy)
        finally:
            await pool.close()

    report = _run(work)
    if chart is not None:
        op.render_chart(report, chart)
    if as_json:
        _echo_json(report.to_json())
        if chart is not None:
            err.print(f"chart written to {chart}")
        return
    _print_report(report)
    if chart is not None:
        out.print(f"chart written to {chart}")


def _print_report(report: op.Report) -> None:
    if not report.rows:
        out.print(f"no cases opened by {_when(report.as_of)} UTC")
        return
    rows = [*report.rows]
    versions = report.by_policy_version()
    if len(versions) < len(rows):
        rows += versions  # segment "*": the policy version as a whole

    def name(r: op.SegmentFigures) -> str:
        return f"{r.policy_name}@{r.policy_version} {r.currency}"

    def head(title: str) -> Column:
        return Column(title, no_wrap=True)

    def num(title: str) -> Column:
        return Column(title, justify="right", no_wrap=True)

    money = Table(head("policy"), head("segment"), num("cases"), num("placed"), num("collected"),
                  num("recovery"), num("cure"), num("kept"), num("contacts/cure"),
                  title=f"Portfolio as of {_when(report.as_of)} UTC")
    for r in rows:
        money.add_row(name(r), r.segment, f"{r.cases:,}", f"{r.placed:,}", f"{r.collected:,}",
                      _pct(r.recovery_rate), _pct(r.cure_rate), _pct(r.promise_kept_rate),
                      "-" if r.contacts_per_cure is None else f"{r.contacts_per_cure:.2f}")
    out.print(money)
    out.print("[dim]recovery: collected / placed; cure: paid or settled / cases; kept: promises "
              "kept / promises kept or broken; contacts/cure: contacts made / cured cases[/dim]")
    rolls = Table(head("policy"), head("segment"),
                  *[num(t.replace("->", "→")) for t in op.ROLL_TRANSITIONS],
                  title="Roll rates (of the cases that entered a stage, the share that moved on to a worse one)")
    for r in rows:
        rolls.add_row(name(r), r.segment, *[_pct(v) for v in r.roll_rates.values()])
    out.print(rolls)
    states = [s for s in (*(c.value for c in CaseState), "other") if any(s in r.by_state for r in rows)]
    by_state = Table(head("policy"), head("segment"), *[num(s) for s in states],
                     title="Cases by state")
    for r in rows:
        by_state.add_row(name(r), r.segment, *[f"{r.by_state.get(s, 0):,}" for s in states])
    out.print(by_state)


# --------------------------------------------------------------------------- registration


def _help(fn: Callable[..., Any]) -> str:
    """The docstring with each paragraph on one line (rich wraps it to the terminal)."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(fn.__doc__ or "").split("\n\n"))


def register(app: typer.Typer) -> None:
    """Add `list`, `history` and `report` to the main CLI."""
    for name, fn in (("list", list_command), ("history", history_command), ("report", report_command)):
        app.command(name, help=_help(fn), rich_help_panel=PANEL)(fn)
