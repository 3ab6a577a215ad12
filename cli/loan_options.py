"""The loan flags (`start`, `policy explain`, `policy simulate`), defined once.

`loan_flags` adds one option per loan-file column to a command and hands the command the values
given, by column, so a loan from flags is checked exactly like a loan-file row.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, get_type_hints

import typer

from cli.plumbing import complain, exit_with
from contracts.messages import LoanInput
from service.errors import BadInput, ErrorKind
from service.loan_file import RowError, loan_warnings, validate_loan_record

REQUIRED, OPTIONAL = "Loan", "Optional loan fields"


@dataclass(frozen=True)
class LoanFlag:
    column: str  # the loan-file column it sets
    flag: str
    help: str
    panel: str = REQUIRED


LOAN_FLAGS: Final = (
    LoanFlag("loan_id", "--loan-id", "The loan system's id: letters, digits, . _ -"),
    LoanFlag("borrower_name", "--name", "Borrower's name, as messages address them."),
    LoanFlag("phone", "--phone", "E.164 mobile number, e.g. +8613800138000."),
    LoanFlag("email", "--email", "Borrower's e-mail address."),
    LoanFlag("locale", "--locale", "Message language: en or zh-CN."),
    LoanFlag("timezone", "--timezone", "Borrower's IANA zone, e.g. Asia/Shanghai."),
    LoanFlag("currency", "--currency", "ISO 4217 code, e.g. CNY."),
    LoanFlag("amount_overdue", "--amount", "Amount overdue, e.g. 1200.00."),
    LoanFlag("due_date", "--due-date", "Due date, YYYY-MM-DD."),
    LoanFlag("interest", "--interest", "Interest part of the amount.", OPTIONAL),
    LoanFlag("fees", "--fees", "Fees part of the amount.", OPTIONAL),
    LoanFlag("product", "--product", "consumer, installment, ...", OPTIONAL),
    LoanFlag("risk_grade", "--risk-grade", "Risk grade, e.g. B.", OPTIONAL),
    LoanFlag("lender", "--lender", "Lender named in messages.", OPTIONAL),
    LoanFlag("borrower_id", "--borrower-id", "Groups a borrower's loans for contact caps.",
             OPTIONAL),
    LoanFlag("policy", "--policy", "A named policy instead of the one the segments select.",
             OPTIONAL),
    LoanFlag("jurisdiction", "--jurisdiction", "Whose contact rules apply: ISO 3166 country or "
             "subdivision, e.g. US-NY (default: the phone number's country).", OPTIONAL),
    LoanFlag("wecom_external_userid", "--wecom-external-userid",
             "The borrower's WeCom external_userid with the lender (wm...); without it the "
             "WeCom channel is unusable.", OPTIONAL),
    LoanFlag("prerecorded_call_consent", "--prerecorded-call-consent",
             "Prior express consent to prerecorded calls: yes/no, true/false, 1/0 (default: "
             "no).", OPTIONAL),
)
_BY_COLUMN: Final = {f.column: f for f in LOAN_FLAGS}

LoanValues = dict[str, str | None]  # column -> the flag's value, None when not given


def flag_of(column: str) -> str:
    known = _BY_COLUMN.get(column)
    return known.flag if known else "--" + column.replace("_", "-")


def loan_flags(fn: Callable[..., None]) -> Callable[..., None]:
    """Give `fn` the loan options; it receives their values as `loan: LoanValues`."""
    own = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    params = [p.replace(annotation=hints[p.name]) for p in own.parameters.values()
              if p.name != "loan"]
    added = [
        inspect.Parameter(
            f.column, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, typer.Option(
                f.flag, help=f.help, rich_help_panel=f.panel, show_default=False)])
        for f in LOAN_FLAGS
    ]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        loan = {f.column: kwargs.pop(f.column, None) for f in LOAN_FLAGS}
        fn(*args, loan=loan, **kwargs)

    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    command.__signature__ = own.replace(parameters=[*added, *keyword])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in [*added, *keyword]}
    del command.__wrapped__  # typer must read the signature above, not fn's
    return command


def loan_from_flags(values: LoanValues) -> LoanInput:
    """Checked like a loan-file row; every problem is printed, by flag, before exiting, and
    what the operator should know of an accepted loan (a landline: no SMS) in yellow."""
    try:
        loan = validate_loan_record({k: v for k, v in values.items() if v is not None})
    except RowError as exc:
        for p in exc.problems:
            complain(f"{flag_of(p.field)}: {p.message}")
        exit_with(ErrorKind.BAD_INPUT)
    for w in loan_warnings(loan):
        complain(f"{flag_of(w.field)}: {w.message}", "yellow")
    return loan


def refuse_flags_with_file(values: LoanValues) -> None:
    """Loan fields come from the file or from flags, never both: a flag would be silently lost."""
    given = [flag_of(k) for k, v in values.items() if v is not None]
    if given:
        raise BadInput("--file", f"takes the loans from the file; drop {', '.join(given)}")
