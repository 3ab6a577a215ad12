"""The `policy` group: the shipped policies, checks of policy files, a loan's case explained and
simulated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Column, Table
from rich.text import Text

from cli.arguments import JsonFlag
from cli.loan_options import LoanValues, loan_flags, loan_from_flags, refuse_flags_with_file
from cli.plumbing import Commands, exit_with, out, show_json, when
from contracts.messages import CaseResult, LoanInput
from service.errors import BadInput, ErrorKind
from service.loan_file import load_loan_file, pick_loan
from service.policy_catalog import list_policies, validate_policies
from service.policy_explain import as_of_moment, explain
from service.policy_simulation import simulate
from service.values import parse_loan_id

commands = Commands()

FileOption = Annotated[Path | None, typer.Option(
    help="Take the loan from this loan file; --loan-id ID (or --line N) picks its row.")]
LineOption = Annotated[int | None, typer.Option(min=1, help="With --file: the row on line N.")]
AsOf = Annotated[str | None, typer.Option(
    "--as-of", "--at", show_default=False,
    help="Start from this moment: YYYY-MM-DD (midnight in the borrower's zone) or an ISO "
         "date-time with offset. Default: now.")]


def one_loan(file: Path | None, line: int | None, values: LoanValues) -> LoanInput:
    """The loan of `explain` and `simulate`: from the flags, or one row of a loan file (by --line,
    or by --loan-id, which then picks the row instead of setting a field)."""
    if file is None:
        if line is not None:
            raise BadInput("--line", "needs --file")
        return loan_from_flags(values)
    loan_id = values.pop("loan_id", None)
    refuse_flags_with_file(values)
    return pick_loan(load_loan_file(file), str(file), line=line,
                     loan_id=parse_loan_id(loan_id) if loan_id else None)


@commands.command("list")
def policy_list() -> None:
    """The shipped policies: version, rule pack, segments and the ladders they select.

        collect policy list
    """
    table = Table("policy", "version", "rule pack", "segment -> ladder (steps)")
    for p in list_policies():
        segments = "\n".join(f"{segment} -> {ladder} ({p.steps.get(ladder, 0)})"
                             for segment, ladder in p.segments)
        table.add_row(p.name, p.version, p.rule_pack, segments)
    out.print(table)


@commands.command("validate")
def policy_validate(
    files: Annotated[list[Path], typer.Argument(help="Policy or rule-pack TOML files.")],
) -> None:
    """Check policy and rule-pack files; one line per problem naming the file and step.

        collect policy validate examples/challenger.toml policies/*.toml
    """
    problems = validate_policies(files)
    for path in files:
        if not any(p.startswith(f"{path}:") for p in problems):
            out.print(Text(f"OK {path}", style="green"))
    for problem in problems:
        out.print(Text(problem, style="red"), soft_wrap=True)
    if problems:
        exit_with(ErrorKind.BAD_INPUT)


@commands.command("explain")
@loan_flags
def policy_explain(
    loan: LoanValues, file: FileOption = None, line: LineOption = None, as_of: AsOf = None,
    count: Annotated[int, typer.Option(min=1, max=100, help="Planned contacts to show.")] = 8,
) -> None:
    """Which segment, ladder and rule pack a loan gets, and its next contacts in local time.

    The loan comes from the same flags as `start`, or from a loan file (--file, with --line N or
    --loan-id ID to pick a row). Each planned contact shows when the ladder puts it and, if the
    rule pack's window or quiet days move it, the rule that does. --as-of looks from another
    day, e.g. the day before the due date, to see the ladder from its first step.

        collect policy explain --file examples/loans.csv --loan-id CN-1001 --as-of 2026-11-20
    """
    one = one_loan(file, line, loan)
    now = as_of_moment(as_of, one.timezone) if as_of else datetime.now(UTC)
    x = explain(one, now=now, count=count)
    start_, end = (t.strftime("%H:%M") for t in x.window)
    out.print(f"loan {x.loan_id}: policy {x.policy_name} {x.policy_version}")
    out.print(f"  segment {x.segment}, ladder {x.ladder}, rule pack {x.rule_pack} "
              f"(contact {start_}-{end} in {x.timezone})", soft_wrap=True)
    if x.past_steps:
        out.print(f"  {x.past_steps} step(s) already due by {when(now)}: a case opened now runs "
                  "the latest of them at once", soft_wrap=True)
    if not x.contacts:
        out.print("  no contacts planned after this time")
        return
    table = Table(Column("step", no_wrap=True), "stage", "kind", "channels",
                  Column("local time", no_wrap=True), "note")
    for c in x.contacts:
        notes = []
        if c.deferred_by:
            notes.append(f"deferred by {c.deferred_by} from "
                         f"{c.planned.astimezone(c.local.tzinfo):%Y-%m-%d %H:%M}")
        if c.condition:
            notes.append(f"only if {c.condition}")
        table.add_row(c.step_id, c.stage, c.kind, ", ".join(c.channels) or "-",
                      f"{c.local:%Y-%m-%d %H:%M %Z}", "; ".join(notes))
    out.print(table)


@commands.command("simulate")
@loan_flags
def policy_simulate(loan: LoanValues, file: FileOption = None, line: LineOption = None,
                    as_of: AsOf = None, as_json: JsonFlag = False) -> None:
    """Run the loan's whole case on a private time-skipping server, from now or from --as-of:
    every step, deferral and escalation its policy and rule pack would make, with nothing sent
    or written.

    No agent answers and no payment arrives, so the case runs to the end of its ladder. Needs no
    cluster or database. Caps count this loan's own contacts only (not the borrower's others).
    With --file, --loan-id picks the row of the file (it does not set the loan's id). A loan due
    in the past starts late, its early steps superseded; --as-of before its due date shows the
    whole ladder.

        collect policy simulate --file examples/loans.csv --loan-id CN-1001 --as-of 2026-11-20
    """
    one = one_loan(file, line, loan)
    start_at = as_of_moment(as_of, one.timezone) if as_of else None
    result = asyncio.run(simulate(one, as_of=start_at))
    if as_json:
        show_json(result, CaseResult)
        return
    zone = ZoneInfo(one.timezone)
    table = Table(Column("local time", no_wrap=True), "event", "summary", "rule",
                  title=f"loan {one.loan_id}, simulated (nothing sent or written)",
                  title_justify="left")
    for e in result.timeline or []:
        table.add_row(f"{e.at.astimezone(zone):%Y-%m-%d %H:%M}", e.kind, Text(e.summary),
                      e.rule or "")
    out.print(table)
    kinds = [e.kind for e in result.timeline or []]
    out.print(f"loan {one.loan_id}: {result.state.value} at stage {result.stage.value}, "
              f"outstanding {result.outstanding} {result.currency}; "
              f"{kinds.count('contact_sent')} messages, {kinds.count('task_created')} agent "
              f"tasks, {kinds.count('contact_deferred')} deferrals, "
              f"{kinds.count('legal_action')} legal actions", soft_wrap=True)
