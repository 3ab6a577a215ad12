"""What operators do about agency placements: place a case with a collection agency, take it back.

    collect place CN-1003                    # the roster's assignment rule chooses the agency
    collect place CN-1003 --agency huaxin --reason "hardship review"
    collect recall CN-1003 --reason "wrong band"

The case itself decides (`service/placements.py`): a case already placed, not placed, or that no
agency may work is refused with its reason (exit 1); no case is 3, a closed one 4.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.arguments import LoanArg
from cli.plumbing import Commands, show_answer, with_temporal
from contracts.agency import PlaceInput, RecallInput
from service import placements
from service.values import (
    parse_identifier,
    parse_label,
    parse_loan_id,
    parse_note,
    parse_person,
)

commands = Commands("Placements")

Operator = Annotated[str, typer.Option("--actor", help="Who acts, for the record.")]


@commands.command()
def place(loan: LoanArg,
          agency: Annotated[str | None, typer.Option(
              help="The agency's id in the roster (default: the roster's assignment rule "
                   "chooses).", show_default=False)] = None,
          reason: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
          actor: Operator = "operator") -> None:
    """Place the case with a collection agency: the ladder pauses while it is placed.

        collect place CN-1003 --agency huaxin --reason "hardship review"
    """
    loan_id = parse_loan_id(loan, "loan")
    arg = PlaceInput(actor=parse_person(actor, "actor"),
                     agency_id=parse_identifier(agency, "agency") if agency is not None else "",
                     reason=parse_note(reason, "reason"))
    show_answer(with_temporal(lambda client: placements.place(client, loan_id, arg)))


@commands.command()
def recall(loan: LoanArg,
           reason: Annotated[str, typer.Option(help="Why the case is taken back.")],
           actor: Operator = "operator") -> None:
    """Take a placed case back from its agency: the placement ends as recalled.

        collect recall CN-1003 --reason "wrong band"
    """
    loan_id = parse_loan_id(loan, "loan")
    arg = RecallInput(actor=parse_person(actor, "actor"), reason=parse_label(reason, "reason", 200))
    show_answer(with_temporal(lambda client: placements.recall(client, loan_id, arg)))
