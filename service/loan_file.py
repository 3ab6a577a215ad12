"""Reading a file of overdue loans (CSV or JSON lines) into validated `LoanInput`s.

The whole file is checked before any workflow starts, and every problem is reported with its
physical line number, so one run of the CLI tells the operator everything to fix rather than one
error per attempt. Whatever the bytes in the file, the only exception out of here is
`LoanFileError` (the file as a whole is unusable); everything row-level is a `LineError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
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

REQUIRED_COLUMNS: Final = (
    "loan_id",
    "borrower_name",
    "phone",
    "email",
    "locale",
    "timezone",
    "currency",
    "amount_overdue",
    "due_date",
)
OPTIONAL_COLUMNS: Final = (
    "product",
    "risk_grade",
    "lender",
    "borrower_id",
    "interest",
    "fees",
    "policy",
    "jurisdiction",
    "wecom_external_userid",
    "prerecorded_call_consent",
)
ALL_COLUMNS: Final = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

JSON_LINES_SUFFIXES: Final = frozenset({".jsonl", ".ndjson", ".json"})
DEFAULT_POLICY: Final = "default"
AMOUNT_COLUMNS: Final = ("amount_overdue", "interest", "fees")
# A column or key name that may be quoted back: lower-case words joined by `_`. A cell of a
# header-less file (a name, a phone number, an e-mail address) is never one of these.
_COLUMN_LIKE = re.compile(r"[a-z][a-z0-9]{0,30}(?:_[a-z0-9]{1,30}){0,3}", re.ASCII)


class LoanFileError(BadInput):
    """The file as a whole cannot be used (missing, unreadable, not UTF-8); field: its path."""


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


@dataclass(frozen=True)
class LineError:
    """One problem at one physical line; `field` is "" for problems with the line as a whole."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.message}" if self.field else self.message)


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


# What the two readers yield: (physical line, the record or why the line has none).
_Records = Iterator[tuple[int, dict[str, Any] | LineError]]


# ---------------------------------------------------------------------------------------------
# One record


def column_name(key: object) -> str:
    """A column or key for a message: itself if it looks like one, else a placeholder."""
    return key if isinstance(key, str) and _COLUMN_LIKE.fullmatch(key) else "(a column not shown)"


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
    except _Unparseable as exc:
        raise LoanFileError(
            str(path), f"line {exc.line}: not valid CSV: {exc.reason}; the file cannot be read "
            "to its end, so none of it is used") from None


def _load(path: Path) -> LoanFileResult:
    text = _read_text(Path(path))
    result = LoanFileResult()
    if not text.strip():
        result.errors.append(LineError(1, "", "the file is empty"))
        return result

    if _is_json_lines(Path(path), text):
        first = text.lstrip()
        if first.startswith("["):
            # A whole-file JSON array is the likeliest mistake with a .json file; saying so
            # beats a "not valid JSON" on every line of it.
            line = text[: len(text) - len(first)].count("\n") + 1
            message = "the file is a JSON array; write one loan object per line (JSON lines)"
            result.errors.append(LineError(line, "", message))
            return result
        records = _json_lines(text)
    elif text.lstrip()[:1] == "{":
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        message = "the file holds JSON lines, not CSV; name it .jsonl"
        result.errors.append(LineError(line, "", message))
        return result
    else:
        records = _csv_rows(text)
    seen: dict[str, int] = {}  # loan_id -> line it first appeared on
    found_any = False
    for line, record in records:
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


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoanFileError(str(path), "no such file") from None
    except IsADirectoryError:
        raise LoanFileError(str(path), "is a directory, not a loan file") from None
    except OSError as exc:
        raise LoanFileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        # utf-8-sig: Excel's "CSV UTF-8" export starts with a byte order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LoanFileError(
            str(path), f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 and try again"
        ) from None


def _is_json_lines(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return False
    if suffix in JSON_LINES_SUFFIXES:
        return True
    return text.lstrip()[:1] == "{"


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


class _Unparseable(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(line, reason)
        self.line, self.reason = line, reason


def _csv_complaint(error: csv.Error) -> str:
    text = str(error)
    if "unexpected end of data" in text:
        return "a quote opened in the row starting here is never closed"
    if "field larger than field limit" in text:
        return (f"a field is longer than {csv.field_size_limit()} characters "
                "(often a quote that is never closed)")
    if "expected after" in text:
        return "text follows a closing quote; quote the whole field"
    return "the reader stopped here"


def _csv_rows(text: str) -> _Records:
    # strict: an unclosed quote is an error, not a field that swallows the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    last_line = 0  # reader.line_num after the previous record: the next record starts below it
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader cannot resynchronise after this: the rows below are unknown, so the
            # whole file is refused (load_loan_file), even with --skip-invalid.
            raise _Unparseable(last_line + 1, _csv_complaint(exc)) from None
        line, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if header is None:
            header, header_line = [cell.strip().lower() for cell in row], line
            header_problems = _header_problems(header)
            if header_problems:
                # Rows under a wrong header cannot be trusted: a typo'd column would drop data.
                for message in header_problems:
                    yield header_line, LineError(header_line, "", message)
                return
            continue
        if len(row) != len(header):
            yield line, LineError(
                line, "", f"expected {len(header)} fields as in the header, found {len(row)}"
            )
            continue
        yield line, dict(zip(header, row, strict=True))


def _header_problems(header: list[str]) -> list[str]:
    if not any(c in ALL_COLUMNS for c in header):
        # Most likely a file without its header row: the cells are a borrower's data.
        return [f"the first line is not a header row (it names no column); the file must "
                f"start with the columns, e.g. {','.join(REQUIRED_COLUMNS)}"]
    problems = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    unknown = [c for c in header if c not in ALL_COLUMNS]
    if unknown:
        named = [repr(c) for c in unknown if _COLUMN_LIKE.fullmatch(c)][:10]
        others = len(unknown) - len(named)
        if others:  # a cell of data in the header row, say: never quoted
            named.append(f"{others} not shown (not a column name)")
        problems.append(f"unknown columns: {', '.join(named)}; allowed are "
                        f"{', '.join(ALL_COLUMNS)}")
    duplicated = sorted({c for c in header if header.count(c) > 1 and c in ALL_COLUMNS})
    if duplicated:
        problems.append(f"columns appear more than once: {', '.join(duplicated)}")
    return problems


def _reject_constant(name: str) -> Any:
    # json accepts NaN and Infinity by default; neither is valid JSON nor a sum of money.
    raise ValueError(f"{name} is not allowed")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of repeated keys silently; for a debt amount that is a guess.
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"key {column_name(key)!r} appears twice")
        record[key] = value
    return record


def _json_lines(text: str) -> _Records:
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends, which JSON
    # allows raw inside strings, and the line numbers would disagree with every editor.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            # Numbers with a fraction or an exponent are kept aside, never made float: an amount
            # that is one is refused with the reason (validate_loan_record).
            record = json.loads(
                line,
                parse_float=JsonFraction,
                parse_constant=_reject_constant,
                object_pairs_hook=_no_duplicate_keys,
            )
        except json.JSONDecodeError as exc:
            yield number, LineError(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # our hooks, huge ints, absurd nesting
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            elif "int_max_str_digits" in str(exc):
                reason = "a number with thousands of digits"
            else:
                reason = str(exc)
            yield number, LineError(number, "", f"not valid JSON: {reason}")
            continue
        if isinstance(record, dict):
            yield number, record
        elif isinstance(record, list):
            yield number, LineError(
                number, "", "a JSON array, not an object; put one loan object on each line"
            )
        else:
            yield number, LineError(
                number, "", "not a JSON object; put one loan object on each line"
            )


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
