"""The sample book and the draft challenger policy in examples/, and the help a newcomer reads.

No server: the book goes through the service's loan-file validator and the policy resolver, the
challenger through `policy validate`, and the help through the installed console script.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest
import typer.main
from typer.testing import CliRunner

from cli.main import app
from service.loan_file import load_loan_file
from service.policy_catalog import validate_policies
from service.policy_explain import explain

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLES: Final = ROOT / "examples"
BOOKS: Final = (EXAMPLES / "loans.csv", EXAMPLES / "loans.jsonl")
COLLECT: Final = ROOT / ".venv" / "bin" / "collect"
WIDE: Final = {"COLUMNS": "200"}


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.name)
def test_the_book_validates_with_no_problem(book: Path) -> None:
    result = load_loan_file(book)
    assert result.errors == []
    assert len(result.loans) == 12


def test_csv_and_json_lines_hold_the_same_loans() -> None:
    csv_loans, jsonl_loans = ([loan for _, loan in load_loan_file(b).loans] for b in BOOKS)
    assert csv_loans == jsonl_loans


def test_the_book_covers_segments_jurisdictions_and_shared_borrowers() -> None:
    loans = [loan for _, loan in load_loan_file(BOOKS[0]).loans]
    now = datetime(2026, 12, 1, tzinfo=UTC)
    explained = [explain(loan, now=now) for loan in loans]
    assert {x.segment for x in explained} >= {"standard", "high_risk", "closed_end",
                                              "small_balance"}
    assert {x.rule_pack for x in explained} == {"cn", "us"}
    assert {x.policy_name for x in explained} == {"default", "us_default"}
    for loan, x in zip(loans, explained, strict=True):
        expected = ("cn", "Asia/Shanghai") if loan.phone.startswith("+86") else ("us", None)
        assert x.rule_pack == expected[0], loan.loan_id
        if expected[1]:
            assert loan.timezone == expected[1]
        else:
            assert loan.timezone.startswith("America/")
    shared = {b for b, n in Counter(loan.borrower_id for loan in loans).items() if n > 1}
    assert shared == {"B-CN-01", "B-US-01"}
    assert any(loan.product == "installment" for loan in loans)
    assert any(loan.amount_overdue < 500 for loan in loans)


def test_the_challenger_policy_validates() -> None:
    assert validate_policies([EXAMPLES / "challenger.toml"]) == []


def test_collect_help_through_the_console_script() -> None:
    env = {**os.environ, **WIDE}
    shown = subprocess.run([str(COLLECT), "--help"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "start" in shown.stdout and "policy" in shown.stdout and "<bool>" not in shown.stdout
    checked = subprocess.run([str(COLLECT), "policy", "validate", "examples/challenger.toml"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK examples/challenger.toml" in checked.stdout


def _verbs() -> list[list[str]]:
    root = typer.main.get_command(app)
    verbs: list[list[str]] = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        if command.hidden:
            continue
        subs = getattr(command, "commands", None)
        verbs.extend([[name, sub] for sub in subs] if subs else [[name]])
    return verbs


@pytest.mark.parametrize("verb", [[], ["policy"], *_verbs()], ids=" ".join)
def test_help_has_no_type_labels_and_one_example(verb: list[str]) -> None:
    result = CliRunner().invoke(app, [*verb, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(bool|str|int|path|int range)>", result.stdout), result.stdout
    if verb and verb != ["policy"]:
        assert re.search(rf"^\s*collect {' '.join(verb)}\b", result.stdout, re.MULTILINE), \
            result.stdout
