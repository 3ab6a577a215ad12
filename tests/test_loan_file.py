"""Validators and the loan-file loader: what they accept, what they say, and that they never crash.

The property tests matter most here: a loan file comes from outside, and the loader promises
that nothing but `LoanFileError` ever escapes it, whatever the bytes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.messages import LoanInput
from service.currencies import ISO_4217_CODES, parse_currency
from service.errors import BadInput
from service.loan_file import (
    ALL_COLUMNS,
    REQUIRED_COLUMNS,
    LineError,
    LoanFileError,
    LoanFileResult,
    RowError,
    load_loan_file,
    validate_loan_record,
)
from service.masking import mask_email, mask_name, mask_phone
from service.values import (
    date_bounds,
    parse_amount,
    parse_date,
    parse_email,
    parse_loan_id,
    parse_locale,
    parse_name,
    parse_phone,
    parse_timezone,
)

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def good_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "loan_id": "L-1001",
        "borrower_name": "Zhang Wei",
        "phone": "+8613800138000",
        "email": "zhang.wei@example.cn",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "currency": "CNY",
        "amount_overdue": "1250.00",
        "due_date": "2026-01-02",
    }
    record.update(overrides)
    return record


def write_csv(
    path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = REQUIRED_COLUMNS
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def error_strings(result: LoanFileResult) -> list[str]:
    return [str(e) for e in result.errors]


def rejects(parser: Callable[..., Any], value: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(BadInput) as caught:
        parser(value, *args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Validators


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1250.00", Decimal("1250.00")),
        ("12.5", Decimal("12.5")),
        ("7", Decimal("7")),
        (" 3.10 ", Decimal("3.10")),
        ("999999999999999.99", Decimal("999999999999999.99")),
        (42, Decimal("42")),
        (Decimal("12.50"), Decimal("12.50")),
        (Decimal("1E+3"), Decimal("1000")),
    ],
)
def test_parse_amount_accepts(text: Any, expected: Decimal) -> None:
    amount = parse_amount(text)
    assert amount == expected
    assert isinstance(amount, Decimal)
    assert str(amount) == str(expected)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("abc", "is not a decimal amount"),
        ("1.23456", "more than 4 decimal places"),
        ("1e5", "not a plain decimal amount"),
        ("NaN", "not a finite amount"),
        ("Infinity", "not a finite amount"),
        ("", "required"),
        ("   ", "required"),
        ("0", "greater than zero"),
        ("0.00", "greater than zero"),
        ("-5", "negative"),
        ("1,250.00", "thousands separators"),
        (".5", "not a plain decimal amount"),
        ("5.", "not a plain decimal amount"),
        ("+5", "not a plain decimal amount"),
        ("١٢٣", "not a plain decimal amount"),  # Arabic-Indic digits: Decimal() would take them
        ("1234567890123456", "too large"),
        (12.5, "as strings"),
        (True, "expected text"),
        (Decimal("1.00005"), "more than 4 decimal places"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("1E+999999999"), "too large"),
    ],
)
def test_parse_amount_rejects(text: Any, hint: str) -> None:
    message = rejects(parse_amount, text)
    assert message.startswith("amount: ")
    assert hint in message


def test_parse_amount_message_format_and_zero() -> None:
    assert rejects(parse_amount, "abc") == "amount: is not a decimal amount"
    assert rejects(parse_amount, "1.2.3") == "amount: '1.2.3' is not a decimal amount"
    assert rejects(parse_amount, "x", field="fees").startswith("fees: ")
    assert parse_amount("0", allow_zero=True) == 0
    assert parse_amount("0000000000000001") == 1  # leading zeros are not integer digits


def test_parse_currency() -> None:
    assert parse_currency("USD") == "USD"
    assert parse_currency(" CNY ") == "CNY"
    assert parse_currency("XCG") == "XCG"
    assert rejects(parse_currency, "usd") == "currency: currency codes are upper case: USD"
    assert rejects(parse_currency, "XYZ") == "currency: 'XYZ' is not an ISO 4217 currency code"
    for code in ("XTS", "XXX", "ANG", "US", "USDD", "", "$"):
        rejects(parse_currency, code)
    assert 170 <= len(ISO_4217_CODES) <= 185
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in ISO_4217_CODES)


def test_parse_timezone() -> None:
    assert parse_timezone("Asia/Shanghai") == "Asia/Shanghai"
    assert parse_timezone("America/New_York") == "America/New_York"
    assert parse_timezone("UTC") == "UTC"
    for bad in ("", "Mars/Olympus", "../etc", "/etc/passwd", "America", "localtime", "a\x00b",
                "asia/shanghai", "x" * 5000):
        assert "timezone: " in rejects(parse_timezone, bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+8613800138000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+86-138-0013-8000", "+8613800138000"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0000", "+442079460000"),
    ],
)
def test_parse_phone_accepts_and_normalises(text: str, expected: str) -> None:
    assert parse_phone(text) == expected


@pytest.mark.parametrize(
    "text",
    ["13800138000", "+8613800138", "+86138001380001234", "+1 800 FLOWERS", "+1 415 555 2671 x12",
     "+", "+0000000000", "＋8613800138000"],
)
def test_parse_phone_rejects_without_echo(text: str) -> None:
    message = rejects(parse_phone, text)
    assert message.startswith("phone: ")
    assert "masked" in message
    assert text not in message
    digits = "".join(ch for ch in text if ch.isdigit())
    assert len(digits) < 8 or digits not in message.replace(" ", "")


def test_parse_phone_message_shape() -> None:
    assert rejects(parse_phone, "+8613800138") == (
        "phone: not a valid E.164 number (value masked: +86******38)"
    )


def test_parse_email() -> None:
    assert parse_email("john@example.com") == "john@example.com"
    assert parse_email("John.Smith+debt@Mail.Example.CO.UK") == "John.Smith+debt@mail.example.co.uk"
    for bad in ("john", "john@example", "john@@example.com", "jo hn@example.com",
                "john@example.com, amy@example.com", "john.@example.com", "@example.com",
                "john@-example.com", "a" * 65 + "@example.com", "j@" + "a" * 250 + ".com"):
        message = rejects(parse_email, bad)
        assert message.startswith("email: not a valid email address (value masked: ")
        assert bad not in message
    assert rejects(parse_email, "john@example") == (
        "email: not a valid email address (value masked: j***@e***)"
    )


def test_parse_date() -> None:
    assert parse_date("2026-01-02", "due_date") == date(2026, 1, 2)
    assert parse_date(" 2024-02-29 ", "due_date") == date(2024, 2, 29)
    for bad in ("2026/01/02", "02-01-2026", "2026-1-2", "20260102", "2026-01-02T00:00", ""):
        message = rejects(parse_date, bad, "due_date")
        assert message.startswith("due_date: ")
    assert "YYYY-MM-DD" in rejects(parse_date, "2026/01/02", "due_date")
    assert rejects(parse_date, "2026-13-01", "due_date") == (
        "due_date: '2026-13-01' is not a real date (expected YYYY-MM-DD)"
    )
    rejects(parse_date, "2025-02-29", "due_date")


def test_parse_locale() -> None:
    assert parse_locale("en") == "en"
    assert parse_locale("zh-CN") == "zh-CN"
    assert parse_locale("zh-cn") == "zh-CN"
    assert parse_locale("ZH_cn") == "zh-CN"
    for bad in ("fr", "zh", "zh-TW", "english", ""):
        rejects(parse_locale, bad)


def test_parse_loan_id() -> None:
    assert parse_loan_id("L-1001") == "L-1001"
    assert parse_loan_id("a.b_c-9") == "a.b_c-9"
    assert parse_loan_id("x" * 64) == "x" * 64
    assert parse_loan_id(12345) == "12345"
    for bad in ("", "x" * 65, "L 1", "L/1", "loan#1", "贷款1", True):
        assert rejects(parse_loan_id, bad).startswith("loan_id: ")


def test_parse_name_never_echoes() -> None:
    assert parse_name("  Zhang Wei ") == "Zhang Wei"
    assert parse_name("张伟") == "张伟"
    rejects(parse_name, "")
    rejects(parse_name, "   ")
    long_name = "Bartholomew " * 20
    assert long_name.strip() not in rejects(parse_name, long_name)
    message = rejects(parse_name, "Zhang\nWei")
    assert "Zhang" not in message and "Wei" not in message


def test_masks_keep_only_a_few_characters() -> None:
    assert mask_phone("+8613800138000") == "+86*********00"
    assert mask_phone("12345") == "*****"
    assert mask_email("john@example.com") == "j***@e***.com"
    assert mask_email("nonsense") == "n***"
    assert mask_name("Zhang Wei") == "Z***"
    assert mask_name("张伟") == "张***"
    assert len(mask_phone("+1" * 1000)) < 20


# ---------------------------------------------------------------------------------------------
# validate_loan_record


def test_validate_loan_record_builds_loan_input() -> None:
    loan = validate_loan_record(
        good_record(locale="zh-cn", interest="10.00", fees=5, product="card", borrower_id="B-7")
    )
    assert loan == LoanInput(
        loan_id="L-1001",
        borrower_name="Zhang Wei",
        phone="+8613800138000",
        email="zhang.wei@example.cn",
        locale="zh-CN",
        timezone="Asia/Shanghai",
        currency="CNY",
        amount_overdue=Decimal("1250.00"),
        due_date=date(2026, 1, 2),
        product="card",
        borrower_id="B-7",
        interest=Decimal("10.00"),
        fees=Decimal("5"),
    )


def test_validate_loan_record_defaults_for_blank_optionals() -> None:
    loan = validate_loan_record(good_record(product="", interest=" ", policy=None))
    assert loan.product == "consumer"
    assert loan.interest == Decimal("0")
    assert loan.policy is None


def test_validate_loan_record_reports_every_problem() -> None:
    with pytest.raises(RowError) as caught:
        validate_loan_record(
            good_record(phone="+86123", currency="XYZ", amount_overdue="1.23456", colour="red")
        )
    fields = [p.field for p in caught.value.problems]
    assert fields == ["colour", "phone", "currency", "amount_overdue"]


def test_validate_loan_record_missing_and_cross_field() -> None:
    with pytest.raises(RowError) as caught:
        validate_loan_record({"loan_id": "L1"})
    assert {p.field for p in caught.value.problems} == set(REQUIRED_COLUMNS) - {"loan_id"}

    with pytest.raises(RowError) as caught:
        validate_loan_record(good_record(amount_overdue="100", interest="60", fees="40.01"))
    assert [p.field for p in caught.value.problems] == ["amount_overdue"]
    assert validate_loan_record(good_record(amount_overdue="100", interest="60", fees="40"))

    with pytest.raises(RowError) as caught:
        validate_loan_record(good_record(currency="JPY", amount_overdue="100.50"))
    assert "no minor unit" in str(caught.value)


def test_validate_loan_record_json_number_types() -> None:
    loan = validate_loan_record(good_record(amount_overdue=Decimal("12.50"), fees=3))
    assert loan.amount_overdue == Decimal("12.50") and loan.fees == 3
    with pytest.raises(RowError) as caught:
        validate_loan_record(good_record(amount_overdue=12.5))
    assert "as strings" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Files


def test_good_csv_loads(tmp_path: Path) -> None:
    columns = (*REQUIRED_COLUMNS, "interest", "product")
    rows = [
        good_record(interest="50.25", product="card"),
        good_record(
            loan_id="L-1002",
            borrower_name="Ann Lee",
            phone="+1 415 555 2671",
            email="ann@example.com",
            locale="en",
            timezone="America/New_York",
            currency="USD",
            amount_overdue="99.9",
            due_date="2025-12-31",
        ),
    ]
    result = load_loan_file(write_csv(tmp_path / "loans.csv", rows, columns))
    assert result.errors == []
    assert result.ok
    assert [line for line, _ in result.loans] == [2, 3]
    first, second = (loan for _, loan in result.loans)
    assert first.amount_overdue == Decimal("1250.00") and first.interest == Decimal("50.25")
    assert first.product == "card" and first.due_date == date(2026, 1, 2)
    assert second.phone == "+14155552671" and second.amount_overdue == Decimal("99.9")
    assert second.interest == Decimal("0") and second.product == "consumer"


def test_csv_with_bom_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "loans.csv"
    header = ",".join(REQUIRED_COLUMNS)
    body = (
        f"{header}\r\n"
        'L1,"Zhang, Wei",+8613800138000,z@example.cn,zh-CN,Asia/Shanghai,CNY,1.00,2026-01-02\r\n'
        "\r\n"
        'L2,"Bad\nName",+8613800138000,z@example.cn,zh-CN,Asia/Shanghai,CNY,1.00,2026-01-02\r\n'
        "L3,Ann,+8613800138000,z@example.cn,zh-CN,Asia/Shanghai,CNY,1.00,2026-13-02\r\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = load_loan_file(path)
    assert [(line, loan.borrower_name) for line, loan in result.loans] == [(2, "Zhang, Wei")]
    # L2 spans lines 4-5, so L3 is on line 6.
    assert [(e.line, e.field) for e in result.errors] == [(4, "borrower_name"), (6, "due_date")]


def test_bad_rows_report_one_line_per_problem(tmp_path: Path) -> None:
    rows = [
        good_record(),
        good_record(loan_id="L2", phone="+8612345678901", email="nobody@nowhere"),
        good_record(loan_id="L3", currency="XYZ"),
        good_record(loan_id="L4", amount_overdue="abc", due_date="2026/01/02", locale="fr"),
        good_record(loan_id="L5"),
    ]
    result = load_loan_file(write_csv(tmp_path / "loans.csv", rows))
    assert [line for line, _ in result.loans] == [2, 6]
    assert error_strings(result) == [
        "line 3: phone: not a valid E.164 number (value masked: +86*********01)",
        "line 3: email: not a valid email address (value masked: n***@n***)",
        "line 4: currency: 'XYZ' is not an ISO 4217 currency code",
        "line 5: locale: is not a supported locale (supported: en, zh-CN)",
        "line 5: amount_overdue: is not a decimal amount",
        "line 5: due_date: is not a date in YYYY-MM-DD form",
    ]
    text = "\n".join(error_strings(result))
    assert "+8612345678901" not in text and "nobody" not in text


def test_duplicate_loan_ids(tmp_path: Path) -> None:
    rows = [good_record(loan_id="A"), good_record(loan_id="B"), good_record(loan_id="A")]
    # CSV lines are one further down than JSON lines because of the header.
    for path, offset in ((write_csv(tmp_path / "d.csv", rows), 1),
                         (write_jsonl(tmp_path / "d.jsonl", rows), 0)):
        result = load_loan_file(path)
        assert [line for line, _ in result.loans] == [1 + offset, 2 + offset]
        assert error_strings(result) == [
            f"line {3 + offset}: loan_id: already appears on line {1 + offset}"
        ]


def test_missing_columns(tmp_path: Path) -> None:
    columns = tuple(c for c in REQUIRED_COLUMNS if c not in ("phone", "due_date"))
    result = load_loan_file(write_csv(tmp_path / "m.csv", [good_record()], columns))
    assert result.loans == []
    assert error_strings(result) == ["line 1: missing required columns: phone, due_date"]


def test_unknown_and_repeated_columns(tmp_path: Path) -> None:
    columns: tuple[str, ...] = (*REQUIRED_COLUMNS, "ammount", "notes")
    result = load_loan_file(write_csv(tmp_path / "u.csv", [good_record()], columns))
    assert result.loans == []
    (error,) = result.errors
    assert error.line == 1 and "unknown columns: 'ammount', 'notes'" in str(error)

    columns = (*REQUIRED_COLUMNS, "phone")
    result = load_loan_file(write_csv(tmp_path / "r.csv", [good_record()], columns))
    assert error_strings(result) == ["line 1: columns appear more than once: phone"]


def test_unknown_key_in_json_line(tmp_path: Path) -> None:
    result = load_loan_file(write_jsonl(tmp_path / "u.jsonl", [good_record(notes="x")]))
    assert error_strings(result) == ["line 1: notes: unknown field"]


def test_wrong_number_of_csv_fields(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    write_csv(path, [good_record()])
    with path.open("a", encoding="utf-8") as f:
        f.write("L9,only,three\n")
    result = load_loan_file(path)
    assert len(result.loans) == 1
    assert error_strings(result) == ["line 3: expected 9 fields as in the header, found 3"]


def test_good_jsonl_loads_with_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "loans.ndjson"
    second = json.dumps(good_record(loan_id="L2", amount_overdue="7")).replace('"7"', "1000")
    path.write_text(json.dumps(good_record()) + "\n\n   \n" + second + "\n", encoding="utf-8")
    result = load_loan_file(path)
    assert result.errors == []
    assert [(line, loan.amount_overdue) for line, loan in result.loans] == [
        (1, Decimal("1250.00")),
        (4, Decimal("1000")),  # an integer JSON number is exact
    ]
    assert str(result.loans[0][1].amount_overdue) == "1250.00"


def test_malformed_json_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps(good_record(loan_id="L1")),
        '{"loan_id": "L2",',
        "[1, 2]",
        '"just a string"',
        json.dumps(good_record(loan_id="L5")).replace('"1250.00"', "NaN"),
        '{"loan_id": "L6", "loan_id": "L7"}',
        json.dumps(good_record(loan_id="L8")),
        "[" * 100_000,
    ]
    path = tmp_path / "loans.json"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = load_loan_file(path)
    assert [line for line, _ in result.loans] == [1, 7]
    messages = error_strings(result)
    assert messages[0].startswith("line 2: not valid JSON: ")
    assert messages[1].startswith("line 3: a JSON array")
    assert messages[2].startswith("line 4: not a JSON object")
    assert messages[3] == "line 5: not valid JSON: NaN is not allowed"
    assert messages[4] == "line 6: not valid JSON: key 'loan_id' appears twice"
    assert messages[5].startswith("line 8: not valid JSON: ")
    assert len(messages) == 6


def test_json_array_file_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "loans.json"
    path.write_text("\n" + json.dumps([good_record()], indent=2), encoding="utf-8")
    assert error_strings(load_loan_file(path)) == [
        "line 2: the file is a JSON array; write one loan object per line (JSON lines)"
    ]


def test_format_sniffed_when_extension_unknown(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "loans.txt", [good_record()])
    assert len(load_loan_file(jsonl).loans) == 1
    as_csv = write_csv(tmp_path / "loans.dat", [good_record()])
    assert len(load_loan_file(as_csv).loans) == 1


def test_whole_file_problems(tmp_path: Path) -> None:
    with pytest.raises(LoanFileError, match="no such file"):
        load_loan_file(tmp_path / "absent.csv")
    with pytest.raises(LoanFileError, match="directory"):
        load_loan_file(tmp_path)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(",".join(REQUIRED_COLUMNS).encode() + b"\nL1,Jos\xe9\n")
    with pytest.raises(LoanFileError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_loan_file(latin1)

    empty = tmp_path / "empty.csv"
    empty.write_text("\n  \n", encoding="utf-8")
    assert error_strings(load_loan_file(empty)) == ["line 1: the file is empty"]
    header_only = write_csv(tmp_path / "header.csv", [])
    assert error_strings(load_loan_file(header_only)) == ["line 1: the file has no loans in it"]


def test_line_error_str() -> None:
    assert str(LineError(3, "currency", "'XYZ' is bad")) == "line 3: currency: 'XYZ' is bad"
    assert str(LineError(4, "", "not valid JSON: x")) == "line 4: not valid JSON: x"


# ---------------------------------------------------------------------------------------------
# Properties


def _load_or_refuse(path: Path) -> None:
    try:
        result = load_loan_file(path)
    except LoanFileError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, LoanFileResult)
    for error in result.errors:
        assert isinstance(error, LineError) and error.line >= 1
        assert "\n" not in str(error)


_CSV_ALPHABET = st.sampled_from(list(',"\n\r x1.+-@é\x00{}[]:') + list(ALL_COLUMNS))


@PROPERTY
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        # Start with a valid header so the rows themselves get exercised, not just the header.
        st.lists(_CSV_ALPHABET, max_size=80).map(
            lambda parts: (",".join(REQUIRED_COLUMNS) + "\n" + "".join(parts)).encode()
        ),
        st.lists(st.sampled_from([*'{}[]":,1.5e-NaN \n', '"loan_id"', '"1.23"']),
                 max_size=60).map(lambda parts: "".join(parts).encode()),
    ),
    suffix=st.sampled_from([".csv", ".jsonl", ".json", ".txt", ""]),
)
def test_any_bytes_give_a_result_or_loan_file_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"loans{suffix}"
    path.write_bytes(data)
    _load_or_refuse(path)


_ANY_VALUE = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@PROPERTY
@given(
    record=st.dictionaries(
        st.one_of(st.sampled_from(ALL_COLUMNS), st.text(max_size=10)), _ANY_VALUE, max_size=20
    )
)
def test_random_records_raise_only_row_error(record: dict[str, Any]) -> None:
    try:
        loan = validate_loan_record(record)
    except RowError as exc:
        assert exc.problems
        return
    assert isinstance(loan, LoanInput)


_VALIDATORS: list[Callable[[Any], Any]] = [
    parse_amount,
    lambda v: parse_amount(v, "fees", allow_zero=True),
    parse_currency,
    parse_timezone,
    parse_phone,
    parse_email,
    lambda v: parse_date(v, "due_date"),
    parse_locale,
    parse_loan_id,
    parse_name,
]


@PROPERTY
@given(
    index=st.integers(0, len(_VALIDATORS) - 1),
    value=st.one_of(st.text(), st.from_regex(r"\+[0-9 -]{0,20}", fullmatch=True)),
)
def test_validators_raise_only_input_error(index: int, value: str) -> None:
    try:
        _VALIDATORS[index](value)
    except BadInput as exc:
        assert "\n" not in str(exc)


@PROPERTY
@given(value=st.text(alphabet="0123456789+ -", min_size=8, max_size=20))
def test_phone_never_echoed(value: str) -> None:
    try:
        parse_phone(value)
    except BadInput as exc:
        assert value.strip() not in str(exc)


@PROPERTY
@given(value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789@._-", min_size=6))
def test_email_never_echoed(value: str) -> None:
    try:
        parse_email(value)
    except BadInput as exc:
        assert value not in str(exc)


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid raw record, and the values the LoanInput must come out with."""
    subscriber = draw(st.text(alphabet="0123456789", min_size=8, max_size=8))
    separator = draw(st.sampled_from(["", " ", "-"]))
    phone = separator.join(["+86", "138", subscriber[:4], subscriber[4:]])
    amount = draw(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999999999.99"), places=2)
    )
    interest = draw(st.decimals(min_value=0, max_value=amount, places=2))
    fees = draw(st.decimals(min_value=0, max_value=amount - interest, places=2))
    low, high = date_bounds()
    due = draw(st.dates(min_value=low, max_value=high))
    name = draw(st.text(st.characters(categories=["L"]), min_size=1, max_size=20))
    loan_id = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
                   .filter(lambda text: ".." not in text))
    currency = draw(st.sampled_from(["USD", "CNY", "EUR", "GBP", "HKD"]))
    timezone = draw(st.sampled_from(["Asia/Shanghai", "America/New_York", "Europe/London", "UTC"]))
    locale = draw(st.sampled_from(["en", "zh-CN", "zh-cn", "EN"]))
    as_number = draw(st.booleans())  # typed callers (the API) may pass Decimals
    raw = {
        "loan_id": loan_id,
        "borrower_name": f" {name} ",
        "phone": phone,
        "email": "someone@example.com",
        "locale": locale,
        "timezone": timezone,
        "currency": currency,
        "amount_overdue": amount if as_number else format(amount, "f"),
        "due_date": due.isoformat(),
        "interest": format(interest, "f"),
        "fees": fees if as_number else format(fees, "f"),
    }
    expected = {
        "loan_id": loan_id,
        "borrower_name": name,
        "phone": "+86138" + subscriber,
        "locale": "zh-CN" if locale.lower() == "zh-cn" else "en",
        "timezone": timezone,
        "currency": currency,
        "amount_overdue": amount,
        "due_date": due,
        "interest": interest,
        "fees": fees,
    }
    return raw, expected


@PROPERTY
@given(case=valid_records())
def test_valid_records_round_trip(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    raw, expected = case
    loan = validate_loan_record(raw)
    for name, value in expected.items():
        got = getattr(loan, name)
        assert got == value, name
        assert type(got) is type(value), name


@settings(max_examples=50, deadline=None)
@given(cases=st.lists(valid_records(), min_size=1, max_size=5, unique_by=lambda c: c[0]["loan_id"]))
def test_valid_files_round_trip(
    tmp_path_factory: pytest.TempPathFactory, cases: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    directory = tmp_path_factory.mktemp("roundtrip")
    rows = [
        {k: format(v, "f") if isinstance(v, Decimal) else v for k, v in raw.items()}
        for raw, _ in cases
    ]
    columns = (*REQUIRED_COLUMNS, "interest", "fees")
    for path in (
        write_csv(directory / "l.csv", rows, columns),
        write_jsonl(directory / "l.jsonl", rows),
    ):
        result = load_loan_file(path)
        assert result.errors == []
        for (_, loan), (_, expected) in zip(result.loans, cases, strict=True):
            assert loan.amount_overdue == expected["amount_overdue"]
            assert loan.due_date == expected["due_date"]
            assert loan.phone == expected["phone"]


# ---------------------------------------------------------------------------------------------
# The WeCom id and the consent to prerecorded calls (optional columns and `start` flags)

WECOM_ID = "wmAbC123_xyz-0987654321abcdefABCD"


@pytest.mark.parametrize(("given", "expected"), [
    ("true", True), ("TRUE", True), ("yes", True), (" Yes ", True), ("1", True),
    ("false", False), ("no", False), ("NO", False), ("0", False), (True, True), (False, False),
    (1, True), (0, False),
])
def test_prerecorded_call_consent_reads_yes_and_no(given: Any, expected: bool) -> None:
    loan = validate_loan_record(good_record(prerecorded_call_consent=given))
    assert loan.prerecorded_call_consent is expected


@pytest.mark.parametrize("given", ["y", "n", "on", "2", "consent", "-1", 2, Decimal("1"),
                                   [True]])
def test_prerecorded_call_consent_refuses_anything_else_naming_the_field(given: Any) -> None:
    with pytest.raises(RowError) as caught:
        validate_loan_record(good_record(prerecorded_call_consent=given))
    assert str(caught.value) == (
        "prerecorded_call_consent: must be true or false (or yes/no, 1/0)")


def test_wecom_id_is_kept_and_optional_columns_default() -> None:
    loan = validate_loan_record(good_record(wecom_external_userid=f" {WECOM_ID} "))
    assert loan.wecom_external_userid == WECOM_ID
    plain = validate_loan_record(good_record(wecom_external_userid="",
                                             prerecorded_call_consent=" "))
    assert (plain.wecom_external_userid, plain.prerecorded_call_consent) == ("", False)


@pytest.mark.parametrize(("given", "message"), [
    ("wm secret id", "must be 1-64 characters of letters, digits, _ and - (the external_userid "
                     "WeCom gives, e.g. wm...)"),
    ("wm" + "a" * 63, "must be 1-64 characters of letters, digits, _ and - (the external_userid "
                      "WeCom gives, e.g. wm...)"),
    ("wm微信id", "must be 1-64 characters of letters, digits, _ and - (the external_userid "
               "WeCom gives, e.g. wm...)"),
    (12345678, "expected text, got a number"),
])
def test_wecom_id_refused_without_echo(given: Any, message: str) -> None:
    with pytest.raises(RowError) as caught:
        validate_loan_record(good_record(wecom_external_userid=given))
    text = str(caught.value)
    assert text.startswith(f"wecom_external_userid: {message}")
    assert str(given) not in text and "secret" not in text


def test_the_two_columns_in_csv_and_json_lines(tmp_path: Path) -> None:
    columns = (*REQUIRED_COLUMNS, "wecom_external_userid", "prerecorded_call_consent")
    rows = [good_record(loan_id="W1", wecom_external_userid=WECOM_ID,
                        prerecorded_call_consent="yes"),
            good_record(loan_id="W2", prerecorded_call_consent="perhaps"),
            good_record(loan_id="W3", wecom_external_userid="wm/" + WECOM_ID)]
    result = load_loan_file(write_csv(tmp_path / "l.csv", rows, columns))
    assert error_strings(result) == [
        "line 3: prerecorded_call_consent: must be true or false (or yes/no, 1/0)",
        "line 4: wecom_external_userid: must be 1-64 characters of letters, digits, _ and - "
        "(the external_userid WeCom gives, e.g. wm...)"]
    [(line, loan)] = result.loans
    assert (line, loan.wecom_external_userid, loan.prerecorded_call_consent) == (
        2, WECOM_ID, True)

    rows[0]["prerecorded_call_consent"], rows[1]["prerecorded_call_consent"] = True, "1"
    rows[2]["wecom_external_userid"] = None
    result = load_loan_file(write_jsonl(tmp_path / "l.jsonl", rows))
    assert result.ok, error_strings(result)
    assert [(n, loan.wecom_external_userid, loan.prerecorded_call_consent)
            for n, loan in result.loans] == [(1, WECOM_ID, True), (2, "", True), (3, "", False)]
    fraction = write_jsonl(tmp_path / "f.jsonl", [good_record(prerecorded_call_consent=1.0)])
    assert load_loan_file(fraction).errors == [LineError(
        1, "prerecorded_call_consent", "must be true or false (or yes/no, 1/0)")]


def test_start_flags_for_the_two_columns() -> None:
    """`start`'s loan flags (shared with `policy explain`, which needs no server) read them as
    the file does, and name the flag at fault."""
    from typer.testing import CliRunner

    import starter

    flags = ["--loan-id", "C1", "--name", "Li Lei", "--phone", "+8613800138000",
             "--email", "li@example.com", "--locale", "en", "--timezone", "Asia/Shanghai",
             "--currency", "CNY", "--amount", "1200.00", "--due-date", "2026-06-01"]
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None, "COLUMNS": "200"}

    def explain(*extra: str) -> Any:
        return CliRunner().invoke(starter.app, ["policy", "explain", *flags, *extra], env=env)

    good = explain("--wecom-external-userid", WECOM_ID, "--prerecorded-call-consent", "yes")
    assert good.exit_code == 0, good.output
    bad = explain("--wecom-external-userid", "wm bad id", "--prerecorded-call-consent", "sure")
    assert bad.exit_code == 2
    assert bad.stderr.splitlines() == [
        "--wecom-external-userid: must be 1-64 characters of letters, digits, _ and - (the "
        "external_userid WeCom gives, e.g. wm...)",
        "--prerecorded-call-consent: must be true or false (or yes/no, 1/0)"]
    assert "bad id" not in bad.output and "sure" not in bad.output
