"""What the loan system does: open cases (one from flags, or a file), report payments, close."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from cli.arguments import Actor, LoanArg
from cli.loan_options import LoanValues, loan_flags, loan_from_flags, refuse_flags_with_file
from cli.plumbing import (
    Commands,
    complain,
    err,
    exit_with,
    out,
    run,
    show_answer,
    with_temporal,
)
from contracts.messages import LoanInput, PaymentResult, PaymentStatus
from service import cases, inputs, updates
from service.connection import Connections
from service.errors import ErrorKind
from service.loan_file import load_loan_file, loans_to_start
from service.values import parse_loan_id

commands = Commands("Loan system")


@commands.command()
@loan_flags
def start(
    loan: LoanValues,
    file: Annotated[Path | None, typer.Option(
        "--file", help="CSV or JSON-lines file of loans.")] = None,
    skip_invalid: Annotated[bool, typer.Option(
        help="With --file: start the good rows, report the bad.")] = False,
    concurrency: Annotated[int, typer.Option(
        min=1, max=500, help="Starts in flight at once.")] = 50,
) -> None:
    """Open the collection case for one loan (flags) or for every loan in a file (--file).

    Starting a loan that already has a case is harmless: it reports "already running" or
    "already closed" and starts nothing. A file is checked in full before anything starts.
    Its columns: examples/loans.csv (CSV) and examples/loans.jsonl (JSON lines) show them all.

        collect start --file examples/loans.csv
    """
    if file is None:
        one = loan_from_flags(loan)

        async def start_one(c: Connections) -> str:
            return await cases.start_loan(await c.temporal(), one, task_queue=c.task_queue,
                                          vault=await c.vault())

        out.print(f"loan {one.loan_id}: {run(start_one)}")
        return
    refuse_flags_with_file(loan)
    result = load_loan_file(file)
    if skip_invalid:  # else loans_to_start refuses the file, and its error lists them once
        for problem in result.errors:
            complain(str(problem), "yellow")
    for warning in result.warnings:  # accepted, but the operator should know (no SMS)
        complain(str(warning), "yellow")
    start_file(loans_to_start(result, str(file), skip_invalid=skip_invalid), concurrency)


def start_file(loans: list[LoanInput], concurrency: int) -> None:
    refused: list[cases.StartResult] = []
    columns = (TextColumn("starting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("start", total=len(loans))

        def advance(result: cases.StartResult) -> None:
            if result.error:
                refused.append(result)
            progress.advance(bar)

        async def start_all(c: Connections) -> dict[str, int]:
            return await cases.start_many(await c.temporal(), loans, task_queue=c.task_queue,
                                          concurrency=concurrency, on_progress=advance,
                                          vault=await c.vault())

        try:
            counts = run(start_all)
        except cases.BulkStartError as exc:
            progress.stop()
            out.print(count_line(exc.counts))
            raise
    for r in refused:
        complain(f"loan {r.loan_id}: refused: {r.error}")
    out.print(count_line(counts))
    if counts["refused"]:
        exit_with(ErrorKind.REFUSED)


def count_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in cases.OUTCOMES)


@commands.command()
def pay(
    loan: LoanArg,
    amount: Annotated[str, typer.Option(help="Amount paid, e.g. 300.00.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code; must be the loan's.")],
    payment_id: Annotated[str, typer.Option(
        help="The loan system's payment id; a repeat changes nothing (duplicate).")],
    paid_at: Annotated[str | None, typer.Option(
        help="When it was paid, ISO with offset (default: now).")] = None,
) -> None:
    """Report a payment from the loan system to the loan's case, and print what the case did
    with it: applied (or kept as excess after the case closed), or a duplicate of a payment id
    already reported (nothing changes; exit 0 for both). Money the case cannot apply, such as a
    payment in another currency or to a case that has ended, is kept as unapplied with the
    reason, never dropped: the reason is printed and the exit code is 1 (refused).

        collect pay CN-1001 --amount 3000.00 --currency CNY --payment-id P-1001-1
    """
    loan_id = parse_loan_id(loan, "loan")
    payment = inputs.payment_input(payment_id, amount, currency, paid_at)

    async def report(c: Connections) -> PaymentResult:
        return await updates.pay(await c.temporal(), c.pool, loan_id, payment)

    result = run(report)
    show_payment(result)


def show_payment(result: PaymentResult) -> None:
    """The case's answer to a payment; unapplied money is a refusal (exit 1) with its reason."""
    if result.status == PaymentStatus.UNAPPLIED:
        complain(f"payment {result.payment_id} not applied: {result.reason}; kept as unapplied "
                 f"(outstanding {result.outstanding} {result.currency})")
        exit_with(ErrorKind.REFUSED)
    out.print(Text(result.message))
    out.print(f"outstanding: {result.outstanding} {result.currency}")


@commands.command()
def close(loan: LoanArg, actor: Actor,
          reason: Annotated[str, typer.Option(
              help=f"Why: {', '.join(inputs.CLOSE_REASONS)}.")]) -> None:
    """Close a case for good (bankruptcy, death, sale, fraud, other): no more contact.

        collect close CN-1007 --actor ops.lead --reason bankruptcy
    """
    loan_id = parse_loan_id(loan, "loan")
    arg = inputs.close_input(actor, reason)
    show_answer(with_temporal(lambda client: updates.close(client, loan_id, arg)))
