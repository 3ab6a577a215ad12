"""Reading a loan file (CSV or JSON lines) into records, each with its physical line number.

Nothing here checks a loan's values (that is `loan_file`): a line that cannot be a record (bad
JSON, a row with the wrong number of fields, a wrong header) becomes a `LineError` in its place,
so the whole file is read in one pass. A file that cannot be read at all raises `LoanFileError`,
and a CSV file its reader cannot parse to the end raises `Unparseable`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from service.errors import BadInput
from service.values import JsonFraction

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
# A column or key name that may be quoted back: lower-case words joined by `_`. A cell of a
# header-less file (a name, a phone number, an e-mail address) is never one of these.
_COLUMN_LIKE = re.compile(r"[a-z][a-z0-9]{0,30}(?:_[a-z0-9]{1,30}){0,3}", re.ASCII)


class LoanFileError(BadInput):
    """The file as a whole cannot be used (missing, unreadable, not UTF-8); field: its path."""


@dataclass(frozen=True)
class LineError:
    """One problem at one physical line; `field` is "" for problems with the line as a whole."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.message}" if self.field else self.message)


# What the two readers yield: (physical line, the record or why the line has none).
Records = Iterator[tuple[int, dict[str, Any] | LineError]]


def column_name(key: object) -> str:
    """A column or key for a message: itself if it looks like one, else a placeholder."""
    return key if isinstance(key, str) and _COLUMN_LIKE.fullmatch(key) else "(a column not shown)"


def read_records(path: Path) -> Records:
    """The records of the file at `path`, CSV or JSON lines by extension or content.

    The file is read at once (`LoanFileError` if it cannot be); a file that holds no records
    of the kind its name says (empty, a JSON array, JSON lines named .csv) yields one
    `LineError` saying so and nothing else.
    """
    text = _read_text(path)
    if not text.strip():
        return iter([(1, LineError(1, "", "the file is empty"))])

    if _is_json_lines(path, text):
        first = text.lstrip()
        if first.startswith("["):
            # A whole-file JSON array is the likeliest mistake with a .json file; saying so
            # beats a "not valid JSON" on every line of it.
            line = text[: len(text) - len(first)].count("\n") + 1
            message = "the file is a JSON array; write one loan object per line (JSON lines)"
            return iter([(line, LineError(line, "", message))])
        return _json_lines(text)
    if text.lstrip()[:1] == "{":
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        message = "the file holds JSON lines, not CSV; name it .jsonl"
        return iter([(line, LineError(line, "", message))])
    return _csv_rows(text)


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


class Unparseable(Exception):
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


def _csv_rows(text: str) -> Records:
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
            raise Unparseable(last_line + 1, _csv_complaint(exc)) from None
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
        # A header cell that cannot be a column name is data (a row of loans where the header
        # should be, or cells shifted into it); then a name-like cell beside it may be a
        # borrower's name: nothing of that row is quoted.
        holds_data = any(not _COLUMN_LIKE.fullmatch(c) for c in unknown)
        named = [] if holds_data else [repr(c) for c in unknown][:10]
        others = len(unknown) - len(named)
        if holds_data:
            named.append(f"{others} not shown (the header row holds data, so none is quoted)")
        elif others:
            named.append(f"{others} more")
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


def _json_lines(text: str) -> Records:
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

