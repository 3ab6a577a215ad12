"""Deletion requests and legal holds (issue 18): what operators ask of a borrower's personal data.

    collect erase --borrower B-CN-01 --reason "PIPL art. 47 request 2026-881" --actor ops.li
    collect legal-hold CN-1003 --reason "litigation 2026-123" --actor ops.li
    collect legal-hold CN-1003 --release --actor ops.li
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.arguments import Actor, LoanArg
from cli.plumbing import Commands, out, run
from service import erasure, retention
from service.connection import Connections
from service.values import parse_loan_id, parse_note, parse_person

commands = Commands("Personal data")


@commands.command()
def erase(
    borrower: Annotated[str, typer.Option(
        help="The loan system's borrower id (or the p:<hash> key of a loan without one).")],
    reason: Annotated[str, typer.Option(help="Why: recorded in the audit.")],
    actor: Actor,
) -> None:
    """Erase a borrower's personal data across all their loans, at once (a deletion request).
    Refused, with the reason (exit 1), while any of their cases is open or under legal hold; the
    cases' figures stay, and status, history and report show the borrower as erased.

        collect erase --borrower B-CN-01 --reason "deletion request 2026-881" --actor ops.li
    """
    request = erasure.erasure_request(borrower, reason, actor)

    async def work(c: Connections) -> erasure.ErasureResult:
        return await erasure.erase_borrower(await c.pool(), await c.temporal(),
                                            request.borrower_id, actor=request.actor,
                                            reason=request.reason)

    done = run(work)
    out.print(f"borrower {done.borrower_id} erased across {len(done.loan_ids)} loan(s): "
              f"{', '.join(done.loan_ids)}")


@commands.command("legal-hold")
def legal_hold(
    loan: LoanArg,
    actor: Actor,
    reason: Annotated[str | None, typer.Option(help="Why the data must be kept.")] = None,
    release: Annotated[bool, typer.Option(help="Release the hold instead.")] = False,
) -> None:
    """Keep a case's personal data past its retention (litigation): the purge leaves it and an
    erasure is refused until the hold is released. A litigation filing holds its case by itself.

        collect legal-hold CN-1003 --reason "litigation 2026-123" --actor ops.li
    """
    loan_id = parse_loan_id(loan, "loan")
    who = parse_person(actor, "actor")
    why = parse_note(reason, "reason", default="legal hold")

    async def work(c: Connections) -> None:
        if release:
            await retention.release_legal_hold(await c.pool(), loan_id, actor=who)
        else:
            await retention.set_legal_hold(await c.pool(), loan_id, actor=who, reason=why)

    run(work)
    out.print(f"loan {loan_id}: legal hold {'released' if release else 'set'}")
