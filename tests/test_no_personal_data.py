"""No output of the loan-file validator or of `start --file` holds a borrower's personal data.

Random loan files with names, phone numbers and e-mail addresses shuffled across columns, with
and without a header, misaligned, JSON lines saved as .csv: whatever is refused or accepted, no
name, no phone number's digits and no e-mail local part appears in any message (issue 14, 7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import starter
from service.loan_file import REQUIRED_COLUMNS, LoanFileError, load_loan_file

NO_SERVER = {"TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None,
             "COLLECTIONS_ENCRYPTION_KEYS": None, "COLUMNS": "200"}
DUE = (datetime.now(UTC).date() + timedelta(days=20)).isoformat()
# Letters no message of ours is made of, so a fragment found in the output is the borrower's.
_ODD = "qxzjvkwy"
_VOWELS = "aeiou"
_WORD = st.tuples(st.sampled_from(_ODD.upper()),
                  st.text(st.sampled_from(_ODD + _VOWELS), min_size=2, max_size=7)
                  ).map("".join).filter(lambda w: any(ch in _ODD for ch in w[1:]))
_CJK_NAME = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=2,
                    max_size=3)
NAMES = st.one_of(st.lists(_WORD, min_size=1, max_size=3).map(" ".join), _CJK_NAME)
PHONES = st.tuples(st.sampled_from(["130", "135", "138", "139", "150", "186"]),
                   st.text("0123456789", min_size=8, max_size=8)).map("".join)
LOCALS = st.tuples(_WORD.map(str.lower), st.text("0123456789", max_size=3)).map("".join)


@dataclass(frozen=True)
class Borrower:
    name: str
    national: str  # 11 digits of a Chinese mobile number
    local: str  # the e-mail's local part

    @property
    def phone(self) -> str:
        return f"+86{self.national}"

    @property
    def email(self) -> str:
        return f"{self.local}@example.com"

    def secrets(self) -> list[str]:
        """The values and the recognisable fragments that must never be printed."""
        words = [w for w in self.name.split() if len(w) >= 3]
        return [self.name, *words, self.national, self.local, self.email]


BORROWERS = st.builds(Borrower, NAMES, PHONES, LOCALS)
LAYOUTS = ("csv", "csv-no-header", "jsonl", "jsonl-as-csv", "csv-misaligned", "csv-name-header")


def cells(n: int, b: Borrower) -> list[str]:
    return [f"L{n}", b.name, b.phone, b.email, "en", "Asia/Shanghai", "CNY", "1200.00", DUE]


@st.composite
def loan_files(draw: st.DrawFn) -> tuple[str, str, list[Borrower]]:
    """(suffix, text, borrowers): a file whose rows have their cells shuffled across columns."""
    borrowers = draw(st.lists(BORROWERS, min_size=1, max_size=4))
    layout = draw(st.sampled_from(LAYOUTS))
    rows = []
    for n, b in enumerate(borrowers, 1):
        order = draw(st.permutations(range(len(REQUIRED_COLUMNS))))
        row = [cells(n, b)[i] for i in order]
        if layout == "csv-misaligned":
            cut = draw(st.integers(0, len(row) - 1))
            row = row[:cut] + row[cut + 1:] if draw(st.booleans()) else [*row, row[cut]]
        rows.append(row)
    if layout in ("jsonl", "jsonl-as-csv"):
        text = "".join(json.dumps(dict(zip(REQUIRED_COLUMNS, r, strict=True)),
                                  ensure_ascii=draw(st.booleans())) + "\n" for r in rows)
        return (".jsonl" if layout == "jsonl" else ".csv"), text, borrowers
    lines = [",".join(r) for r in rows]
    if layout == "csv":
        lines.insert(0, ",".join(REQUIRED_COLUMNS))
    elif layout == "csv-name-header":  # a header row with a borrower's cells in it
        lines.insert(0, ",".join([*REQUIRED_COLUMNS[:4], *rows[0][4:]]))
    return ".csv", "\n".join(lines) + "\n", borrowers


def assert_nothing_personal(text: str, borrowers: list[Borrower]) -> None:
    for b in borrowers:
        for secret in b.secrets():
            assert secret not in text, (secret, text)
        assert b.phone[1:] not in text.replace(" ", ""), text


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=loan_files(), skip_invalid=st.booleans())
def test_no_personal_value_in_any_output(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str, list[Borrower]],
    skip_invalid: bool,
) -> None:
    suffix, text, borrowers = case
    path = tmp_path_factory.mktemp("book") / f"loans{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        result = load_loan_file(path)
        said = [str(e) for e in [*result.errors, *result.warnings]]
    except LoanFileError as exc:
        said = [str(exc)]
    assert_nothing_personal("\n".join(said), borrowers)

    args = ["start", "--file", str(path), *(["--skip-invalid"] if skip_invalid else [])]
    ran = CliRunner().invoke(starter.app, args, env=NO_SERVER)
    assert ran.exit_code in (2, 6), ran.output  # refused, or valid and no server to start on
    assert "Traceback" not in ran.output
    assert_nothing_personal(ran.output, borrowers)


def test_the_generator_makes_valid_loans_when_nothing_is_shuffled(tmp_path: Path) -> None:
    """The property is only worth something if unshuffled rows pass: so the values are real."""
    b = Borrower("Qazix Vowk", "13800138000", "qazu7")
    path = tmp_path / "loans.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n" + ",".join(cells(1, b)) + "\n")
    result = load_loan_file(path)
    assert result.errors == [] and len(result.loans) == 1
