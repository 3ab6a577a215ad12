"""What agents do: work their queue, and record what they agreed with the borrower."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from temporalio.client import Client

from cli.arguments import Actor, Agent, Cur, JsonFlag, LoanArg, Money, Reason, ReviewBy
from cli.plumbing import Commands, out, run, show_answer, show_json, when, with_temporal
from contracts.messages import UpdateResult
from lab.queue_model import queue_model
from service import inputs, updates
from service import tasks as work_queue
from service.connection import Connections
from service.values import parse_loan_id

T = TypeVar("T")

commands = Commands("Agents")


def answer(loan: str, make: Callable[[], T],
           update: Callable[[Client, str, T], Awaitable[UpdateResult]]) -> None:
    """Check the loan id and the input, run the update, print the workflow's answer."""
    loan_id = parse_loan_id(loan, "loan")
    arg = make()
    show_answer(with_temporal(lambda client: update(client, loan_id, arg)))


@commands.command()
def tasks(kind: Annotated[str | None, typer.Option(help="Only call or only visit tasks.")] = None,
          limit: Annotated[int, typer.Option(
              min=1, max=work_queue.MAX_TASKS, help="At most this many.")] = 50,
          as_json: JsonFlag = False,
          order: Annotated[str | None, typer.Option(
              help="due (priority, then deadline) or expected (the amount a call is expected to "
                   "recover, from COLLECT_QUEUE_MODEL's model). Default: expected with a model, "
                   "else due.")] = None) -> None:
    """Open call and visit tasks for agents, most urgent first, with when each may be worked: the
    rule pack's window in the borrower's local time and zone, the next allowed period (local),
    the calls left under each cap, and the deadline. Withdrawn tasks (a hold, a dispute, a cease,
    a closed case) are not listed. With a behaviour model configured (COLLECT_QUEUE_MODEL), each
    task shows the amount a call is expected to recover, and the queue is ranked by it.

        collect tasks --kind call
    """
    wanted = work_queue.task_kind(kind)

    async def read(c: Connections) -> list[work_queue.TaskRow]:
        model = queue_model(c.settings.collect_queue_model)
        return await work_queue.open_tasks(c.dsn(), kind=wanted, limit=limit, model=model,
                                           order=order)

    rows = run(read)
    if as_json:
        show_json(rows, list[work_queue.TaskRow])
        return
    if not rows:
        out.print("no open tasks")
        return
    expected = any(r.expected_per_call is not None for r in rows)
    table = Table("loan", "kind", "step", "priority", "window (local)", "next allowed (local)",
                  "caps left", "due by", *(["expected/call"] if expected else []), "task key")
    now = datetime.now(UTC)
    for r in rows:
        table.add_row(r.loan_id, r.kind, r.step_id, str(r.priority), r.window or "-",
                      next_allowed(r, now), caps_left(r), when(r.due_by),
                      *([expected_figure(r)] if expected else []), r.task_key)
    out.print(table)


def expected_figure(task: work_queue.TaskRow) -> str:
    """"512.40 CNY", or "-" for a task whose case is not recorded."""
    if task.expected_per_call is None:
        return "-"
    return f"{task.expected_per_call} {task.currency}"


def next_allowed(task: work_queue.TaskRow, now: datetime) -> str:
    """The next period the task may be worked, in the borrower's time: "now-22:00" while one is
    open, else "06-03 08:00-22:00"; "none left" when the task's span has no allowed time left."""
    if not task.work_windows:
        return "-"
    period = task.next_period(now)
    if period is None:
        return "none left"
    start, end = (task.local(t) for t in period)
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%m-%d %H:%M}"
    return f"now-{until}" if start <= now else f"{start:%m-%d %H:%M}-{until}"


def caps_left(task: work_queue.TaskRow) -> str:
    """Room under each cap, the rule pack's prefix dropped: "nifa.connected_calls_per_day 2"."""
    prefix = f"{task.rule_pack}." if task.rule_pack else ""
    return ", ".join(f"{cap.removeprefix(prefix)} {n}"
                     for cap, n in sorted(task.caps_left.items())) or "-"


@commands.command()
def promise(loan: LoanArg, agent: Agent, amount: Money, currency: Cur,
            date_: Annotated[str, typer.Option(
                "--date", help="Promised date, YYYY-MM-DD.")]) -> None:
    """Record a promise to pay: escalation pauses until the date (plus grace).

        collect promise US-2001 --agent a.chen --amount 1850.00 --currency USD --date 2026-12-08
    """
    answer(loan, lambda: inputs.promise_input(agent, amount, currency, date_), updates.promise)


@commands.command()
def plan(loan: LoanArg, agent: Agent, currency: Cur,
         installments: Annotated[list[str], typer.Option(
             "--installment", help="AMOUNT@YYYY-MM-DD; repeat for each installment.")]) -> None:
    """Agree an installment plan; the installments must add up to the balance.

        collect plan CN-1002 --agent a.chen --currency CNY \\
            --installment 1800.00@2026-12-10 --installment 1800.00@2027-01-10
    """
    answer(loan, lambda: inputs.plan_input(agent, currency, installments), updates.plan)


@commands.command()
def extend(loan: LoanArg, agent: Agent,
           new_due_date: Annotated[str, typer.Option(help="New due date, YYYY-MM-DD.")],
           reason: Reason = None) -> None:
    """Move the due date later; the ladder follows the new date.

        collect extend CN-1006 --agent a.chen --new-due-date 2026-12-20 --reason "salary late"
    """
    answer(loan, lambda: inputs.extension_input(agent, new_due_date, reason), updates.extend)


@commands.command()
def waive(loan: LoanArg, agent: Agent,
          component: Annotated[str, typer.Option(help="What to waive: interest or fees.")],
          amount: Money, currency: Cur, reason: Reason = None) -> None:
    """Waive part of the interest or fees.

        collect waive CN-1001 --agent a.chen --component fees --amount 50.00 --currency CNY
    """
    answer(loan, lambda: inputs.waiver_input(agent, component, amount, currency, reason),
           updates.waive)


@commands.command()
def settle(loan: LoanArg, agent: Agent, amount: Money, currency: Cur,
           pay_by: Annotated[str, typer.Option(help="Pay-by date, YYYY-MM-DD.")]) -> None:
    """Offer a settlement below the balance; paid in time, it closes the case.

        collect settle CN-1003 --agent a.chen --amount 7200.00 --currency CNY --pay-by 2026-12-10
    """
    answer(loan, lambda: inputs.settlement_input(agent, amount, currency, pay_by), updates.settle)


@commands.command()
def dispute(loan: LoanArg, actor: Actor, reason: Reason = None, review_by: ReviewBy = None) -> None:
    """The borrower disputes the debt: contact pauses until it is resolved or reviewed.

        collect dispute US-2004 --actor a.chen --reason "not my loan"
    """
    answer(loan, lambda: inputs.dispute_input(actor, reason, review_by), updates.hold)


@commands.command()
def hold(loan: LoanArg, actor: Actor,
         kind: Annotated[str, typer.Option(help="Kind of hold: hardship or manual.")],
         reason: Reason = None, review_by: ReviewBy = None) -> None:
    """Pause contact for hardship or by hand, until resolved or reviewed.

        collect hold CN-1005 --actor a.chen --kind hardship --review-by 2027-01-05
    """
    answer(loan, lambda: inputs.hold_input(actor, kind, reason, review_by), updates.hold)


@commands.command()
def resolve(loan: LoanArg, actor: Actor,
            resolution: Annotated[str, typer.Option(help="Outcome of the hold.")] = "resolved",
            reason: Reason = None) -> None:
    """Lift a dispute, hardship or manual hold: contact resumes.

        collect resolve US-2004 --actor a.chen --reason "documents checked"
    """
    answer(loan, lambda: inputs.resolve_input(actor, resolution, reason), updates.resolve)


@commands.command()
def cease(loan: LoanArg, actor: Actor, reason: Reason = None) -> None:
    """The borrower asked us to stop: only notices the rule pack allows still go out.

        collect cease US-2003 --actor a.chen --reason "written request"
    """
    answer(loan, lambda: inputs.cease_input(actor, reason), updates.cease)


@commands.command()
def outcome(loan: LoanArg,
            task_key: Annotated[str, typer.Option(help="The task's key, from `tasks`.")],
            outcome: Annotated[str, typer.Option(
                help=f"What happened: {', '.join(inputs.TASK_OUTCOMES)}.")],
            agent: Agent,
            note: Annotated[str | None, typer.Option(help="Free-text note.")] = None,
            at: Annotated[str | None, typer.Option(
                help="When the call or visit happened, ISO with offset (default: now).")
            ] = None) -> None:
    """Report the outcome of a call or visit task. The contact is recorded when it happened
    (--at); one made outside the borrower's window or over a cap is still recorded, as a
    compliance breach of the rule it broke. A task withdrawn by a hold, dispute, cease or the
    case's end is refused with the reason.

        collect outcome CN-1003 --task-key collection-CN-1003/early-call-1 --outcome reached \\
            --agent a.chen --at 2026-12-01T10:40:00+08:00
    """
    answer(loan, lambda: inputs.task_outcome_input(task_key, outcome, agent, note, at=at),
           updates.task_outcome)
