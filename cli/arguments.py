"""Arguments and options several commands share, each written once."""

from __future__ import annotations

from typing import Annotated

import typer

LoanArg = Annotated[str, typer.Argument(help="The loan id.", show_default=False)]
Agent = Annotated[str, typer.Option(help="Who agreed it (agent id or name).")]
Actor = Annotated[str, typer.Option(help="Who asks (agent, supervisor, system).")]
Reason = Annotated[str | None, typer.Option(help="Why, for the record.")]
ReviewBy = Annotated[str | None, typer.Option(
    help="Review date, YYYY-MM-DD (default: the policy's).")]
Money = Annotated[str, typer.Option("--amount", help="Amount, e.g. 500.00.")]
Cur = Annotated[str, typer.Option("--currency", help="ISO 4217 code; must be the loan's.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts as strings).")]
