"""Reading a file of overdue loans (CSV or JSON lines) into validated `LoanInput`s.

The whole file is checked before any workflow starts, and every problem is reported with its
physical line number, so one run of the CLI tells the operator everything to fix rather than one
error per attempt. Whatever the bytes in the file, the only exception out of here is
`LoanFileError` (the file as a whole is unusable); everything row-level is a `LineError`. The
file's bytes become records in `loan_file_reader`; each record is validated here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from activities import policies as policy_files
from contracts.messages import LoanInput
from contracts.policy import PolicyFile, RulePack, select_segment
from policies import jurisdiction as jurisdictions
from policies import loader as policy_loader
from service.currencies import fraction_problem, parse_currency
from service.errors import BadInput
from service.loan_file_reader import ALL_COLUMNS as ALL_COLUMNS
from service.loan_file_reader import JSON_LINES_SUFFIXES as JSON_LINES_SUFFIXES
from service.loan_file_reader import OPTIONAL_COLUMNS as OPTIONAL_COLUMNS
from service.loan_file_reader import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from service.loan_file_reader import LineError as LineError
from service.loan_file_reader import LoanFileError as LoanFileError
from service.loan_file_reader import Unparseable, column_name, read_records
from service.values import (
    FLOAT_AMOUNT,
    JsonFraction,
    parse_amount,
    parse_date,
    parse_email,
    parse_identifier,
    parse_label,
    parse_loan_id,
    parse_locale,
    parse_name,
    parse_phone,
    parse_timezone,
    parse_wecom_userid,
    parse_yes_no,
    sms_unusable_reason,
)

DEFAULT_POLICY: Final = "default"
AMOUNT_COLUMNS: Final = ("amount_overdue", "interest", "fees")


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RowError(BadInput):
    """Every problem of one record, so a row needs fixing only once."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(problems[0].field, problems[0].message)
        self.args = ("; ".join(str(p) for p in problems),)
        self.problems = problems


@dataclass
class LoanFileResult:
    loans: list[tuple[int, LoanInput]] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    # Accepted loans with something the operator should know (a landline: no SMS), by line.
    warnings: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class FileProblems(BadInput):
    """Rows of a loan file that failed; `problems` lists each by line, `str()` sums them up."""

    def __init__(self, path: str, problems: list[LineError], message: str) -> None:
        super().__init__(path, message)
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# One record


def _json_fraction_refused(parser: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def parse(value: Any, name: str) -> Any:
        if isinstance(value, JsonFraction):
            raise BadInput(name, FLOAT_AMOUNT)
        return parser(value, name)

    return parse


def _jurisdiction(value: Any, name: str) -> str:
    text = parse_label(value, name, 16)
    try:
        return jurisdictions.normalise(text)
    except jurisdictions.JurisdictionError as err:
        raise BadInput(name, str(err).removeprefix("jurisdiction ")) from None


def _is_absent(value: object) -> bool:
    # CSV cannot say null, so a blank cell and a JSON null both mean "not given".
    return value is None or (isinstance(value, str) and not value.strip())


def _label(max_length: int) -> Callable[[Any, str], Any]:
    return lambda value, name: parse_label(value, name, max_length)


# How each column is checked; every parser takes (value, field name).
_REQUIRED_PARSERS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "loan_id": parse_loan_id,
    "borrower_name": parse_name,
    "phone": parse_phone,
    "email": parse_email,
    "locale": parse_locale,
    "timezone": parse_timezone,
    "currency": parse_currency,
    "amount_overdue": _json_fraction_refused(parse_amount),
    "due_date": parse_date,
}
_OPTIONAL_PARSERS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "product": _label(64),
    "risk_grade": _label(16),
    "lender": _label(200),
    # Quoted only when inert (service.masking): some loan systems use national id numbers.
    "borrower_id": parse_identifier,
    "interest": _json_fraction_refused(lambda value, name: parse_amount(value, name, True)),
    "fees": _json_fraction_refused(lambda value, name: parse_amount(value, name, True)),
    "policy": parse_identifier,
    "jurisdiction": _jurisdiction,
    # The borrower's WeCom id: never quoted, like a phone number.
    "wecom_external_userid": parse_wecom_userid,
    "prerecorded_call_consent": parse_yes_no,
}


def validate_loan_record(record: dict[str, Any]) -> LoanInput:
    """Check one record (a CSV row or JSON object) and build the workflow input from it.

    Raises `RowError` with all of the record's problems. Optional columns that are absent or
    blank take `LoanInput`'s defaults. Beyond each field, the loan must have a policy, a segment
    of it and a rule pack for its jurisdiction: what opening its case would look up.
    """
    problems: list[FieldProblem] = []
    values: dict[str, Any] = {}

    for key in record:
        if key not in _REQUIRED_PARSERS and key not in _OPTIONAL_PARSERS:
            problems.append(FieldProblem(column_name(key), "unknown field"))

    for name, parser in (_REQUIRED_PARSERS | _OPTIONAL_PARSERS).items():
        raw = record.get(name)
        if _is_absent(raw):
            if name in _REQUIRED_PARSERS:
                problems.append(FieldProblem(name, "is required but missing"))
            continue
        try:
            values[name] = parser(raw, name)
        except BadInput as exc:
            problems.append(FieldProblem(exc.field, exc.message))

    problems.extend(_cross_field_problems(values))
    if problems:
        raise RowError(problems)
    no_sms = sms_unusable_reason(values["phone"])
    if no_sms:
        values["unusable_channels"] = {"sms": no_sms}
    loan = LoanInput(**values)
    problems = policy_problems(loan)
    if problems:
        raise RowError(problems)
    return loan


def loan_warnings(loan: LoanInput) -> list[FieldProblem]:
    """What the operator should know about an accepted loan; never holds its values."""
    return [FieldProblem("phone", f"{why} (SMS marked unusable for this case)")
            for channel, why in loan.unusable_channels.items() if channel == "sms"]


def policy_catalog() -> tuple[Mapping[str, PolicyFile], Mapping[str, RulePack]]:
    """The shipped policies and rule packs, read again as soon as a file changes."""
    loaded, packs = policy_files.catalog()
    return {name: policy for name, (policy, _digest) in loaded.items()}, packs


def policy_problems(loan: LoanInput) -> list[FieldProblem]:
    """What opening the loan's case would refuse: an unknown policy, a jurisdiction without a
    rule pack (or outside the policy's), no segment for it. The same lookups as
    `policies.loader.resolve_policy`, without building the pinned policy."""
    try:
        policies, packs = policy_catalog()
    except policy_loader.PolicyError as err:
        return [FieldProblem("policy", f"the policy files cannot be read: {err.problems[0]}"
                             if err.problems else "the policy files cannot be read")]
    name = loan.policy or DEFAULT_POLICY
    policy = policies.get(name)
    if policy is None:
        known = ", ".join(sorted(policies)) or "none"
        return [FieldProblem("policy", f"is not a known policy (known: {known})")]
    problems = []
    try:
        jurisdictions.explain_jurisdiction(loan, policy, packs)
    except jurisdictions.JurisdictionError as err:
        problems.append(FieldProblem("jurisdiction", str(err)))
    try:
        select_segment(policy, loan.product, loan.risk_grade, loan.amount_overdue)
    except LookupError:
        problems.append(FieldProblem("policy", f"no segment of policy {name} takes this loan's "
                                               "product, risk_grade and amount"))
    return problems


def _cross_field_problems(values: dict[str, Any]) -> list[FieldProblem]:
    """Checks that need several fields; skipped for any field that already failed on its own."""
    problems: list[FieldProblem] = []
    amount: Decimal | None = values.get("amount_overdue")
    currency: str | None = values.get("currency")
    interest: Decimal = values.get("interest", Decimal(0))
    fees: Decimal = values.get("fees", Decimal(0))
    if amount is not None and interest + fees > amount:
        # Principal is what is left after interest and fees; it cannot be negative. No figures:
        # a shifted column can put a phone number's digits in an amount.
        problems.append(FieldProblem("amount_overdue", "is less than interest + fees"))
    if currency is not None:
        for name in AMOUNT_COLUMNS:
            value = values.get(name)
            problem = None if value is None else fraction_problem(value, currency)
            if problem:
                problems.append(FieldProblem(name, problem))
    return problems


# ---------------------------------------------------------------------------------------------
# The file


def load_loan_file(path: str | os.PathLike[str]) -> LoanFileResult:
    """Read and validate every loan in `path` (CSV, or JSON lines by extension or content).

    A CSV file the reader cannot parse to its end (an unclosed quote, a field past the reader's
    limit) raises `LoanFileError` naming the line: no row of it is used, even the good ones.
    """
    try:
        return _load(Path(path))
    except Unparseable as exc:
        raise LoanFileError(
            str(path), f"line {exc.line}: not valid CSV: {exc.reason}; the file cannot be read "
            "to its end, so none of it is used") from None


def _load(path: Path) -> LoanFileResult:
    result = LoanFileResult()
    seen: dict[str, int] = {}  # loan_id -> line it first appeared on
    found_any = False
    for line, record in read_records(path):
        found_any = True
        if isinstance(record, LineError):
            result.errors.append(record)
            continue
        duplicate = _duplicate_check(line, record, seen)
        result.errors.extend(duplicate)
        try:
            loan = validate_loan_record(record)
        except RowError as exc:
            result.errors.extend(LineError(line, p.field, p.message) for p in exc.problems)
            continue
        if not duplicate:
            result.loans.append((line, loan))
            result.warnings.extend(LineError(line, w.field, w.message)
                                   for w in loan_warnings(loan))

    if not found_any and not result.errors:
        result.errors.append(LineError(1, "", "the file has no loans in it"))
    result.errors.sort(key=lambda e: e.line)  # stable: a line's problems keep their order
    return result


def _duplicate_check(line: int, record: dict[str, Any], seen: dict[str, int]) -> list[LineError]:
    """A second row for one loan would start a second case for the same debt."""
    try:
        loan_id = parse_loan_id(record.get("loan_id"))  # type: ignore[arg-type]
    except BadInput:
        return []  # reported by validate_loan_record
    first = seen.setdefault(loan_id, line)
    if first == line:
        return []
    return [LineError(line, "loan_id", f"already appears on line {first}")]


# ---------------------------------------------------------------------------------------------
# Choosing loans from a checked file


def loans_to_start(result: LoanFileResult, path: str, *, skip_invalid: bool) -> list[LoanInput]:
    """Every loan of the file, or with `skip_invalid` its good ones: a bad row stops all unless
    the caller asked to skip it, so a file is never half started by accident."""
    if result.errors and not skip_invalid:
        lines = len({e.line for e in result.errors})
        raise FileProblems(path, result.errors, (
            f"{len(result.errors)} problem(s) on {lines} line(s); nothing started "
            "(fix them, or pass --skip-invalid to start the good rows)"))
    if not result.loans:
        raise BadInput(path, "no valid loans to start")
    return [loan for _, loan in result.loans]


def pick_loan(
    result: LoanFileResult, path: str, *, line: int | None = None, loan_id: str | None = None
) -> LoanInput:
    """The one loan on `line`, or with `loan_id`, or the file's only loan."""
    if line is not None:
        problems = [e for e in result.errors if e.line == line]
        matches = [loan for n, loan in result.loans if n == line]
    elif loan_id is not None:
        problems = []
        matches = [loan for _, loan in result.loans if loan.loan_id == loan_id]
    else:
        problems = result.errors
        matches = [loan for _, loan in result.loans]
        if len(matches) > 1:
            raise BadInput(path, f"has {len(matches)} loans: choose one with --line or --loan-id")
    if problems:
        raise FileProblems(path, problems, f"{len(problems)} problem(s); fix them first")
    if not matches:
        where = f"line {line}" if line is not None else f"loan {loan_id}"
        raise BadInput(path, f"no valid loan at {where}")
    return matches[0]
