"""The loan-file rules for each field of a loan, as pure checks: the loan-file validator
(`service/`) and the workflow (checking a start input from any client) call the same code.

No I/O beyond the time-zone database `zoneinfo` reads, no clock (today is handed in), no project
import. A refusal names the field and never holds the value: a misaligned file puts names, phone
numbers and e-mail addresses in any column, and these messages reach logs and workflow failures.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import phonenumbers

MAX_INTEGER_DIGITS: Final = 15
MAX_IDENTIFIER_LENGTH: Final = 64
DUE_DATE_YEARS: Final = 10  # a due date at most this many years either side of today

# ISO 4217 List One alphabetic codes in use as of 2026 (fund codes, metals, bond units and XDR
# included; XTS, XXX and withdrawn codes such as ANG, ZWL, SLL, HRK, BGN, CUC left out).
ISO_4217_CODES: Final[frozenset[str]] = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN
    BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK
    DJF DKK DOP DZD
    EGP ERN ETB EUR
    FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD
    HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK
    JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT
    LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN
    NAD NGN NIO NOK NPR NZD
    OMR
    PAB PEN PGK PHP PKR PLN PYG
    QAR
    RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV
    WST
    XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA
    YER
    ZAR ZMW ZWG
    """.split()  # noqa: SIM905 (the table reads better as words)
)
# ISO 4217 minor units (column "E") where they are not 2; codes with none ("N.A.": metals,
# bond units) take 2, as loan systems carry them.
_ZERO_DECIMAL = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_MINOR_UNITS: Final[Mapping[str, int]] = {
    **dict.fromkeys(_ZERO_DECIMAL.split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),  # noqa: SIM905
    **dict.fromkeys("CLF UYW".split(), 4),  # noqa: SIM905
}

_LOAN_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_IDENTIFIER_LENGTH - 1}}}", re.ASCII)
_ZONE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}", re.ASCII)
_NOT_BORROWER_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})
_PHONE_RE = re.compile(r"\+[0-9 ().-]{1,40}", re.ASCII)
_AMOUNT_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


class FieldProblem(ValueError):
    """A field breaks a loan-file rule; the message names the field, never its value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


def check_loan_id(value: object, field: str = "loan_id") -> str:
    """1-64 characters of letters, digits, `.`, `_`, `-`, starting with a letter or digit (the id
    ends up in workflow ids and payment links: `..` and `-` are no loan's id)."""
    if not isinstance(value, str) or not _LOAN_ID_RE.fullmatch(value) or ".." in value:
        raise FieldProblem(field, f"must be 1-{MAX_IDENTIFIER_LENGTH} characters of letters, "
                                  "digits, . _ -, starting with a letter or digit, without '..'")
    return value


def check_currency(value: object, field: str = "currency") -> str:
    if not isinstance(value, str) or value not in ISO_4217_CODES:
        raise FieldProblem(field, "is not an ISO 4217 currency code (three upper-case letters "
                                  "in use, e.g. CNY)")
    return value


def check_timezone(value: object, field: str = "timezone") -> str:
    """An IANA zone name such as Asia/Shanghai (checked by name before the database is read)."""
    complaint = "is not an IANA time zone name (e.g. Asia/Shanghai)"
    if (not isinstance(value, str) or value in _NOT_BORROWER_ZONES
            or not _ZONE_RE.fullmatch(value)):
        raise FieldProblem(field, complaint)
    try:
        zoneinfo.ZoneInfo(value)
    except Exception:  # ZoneInfoNotFoundError, ValueError, OSError: all mean "no such zone"
        raise FieldProblem(field, complaint) from None
    return value


def check_phone(value: object, field: str = "phone") -> str:
    """A valid E.164 number (`+`, country code, number), returned as `+<digits>`."""
    if not isinstance(value, str) or not _PHONE_RE.fullmatch(value.strip()):
        raise FieldProblem(field, "must be an E.164 number: + and the country code first")
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        raise FieldProblem(field, "is not a valid E.164 number") from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise FieldProblem(field, "is not a valid E.164 number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_amount(value: object, currency: str, field: str, *, allow_zero: bool = False,
                 ) -> Decimal:
    """An amount exact to the currency's ISO 4217 minor unit; text or Decimal, never float."""
    if isinstance(value, (bool, float)):
        raise FieldProblem(field, 'send amounts as strings such as "12.50", never as floats')
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        if not _AMOUNT_RE.fullmatch(value.strip()):
            raise FieldProblem(field, "is not a positive decimal amount (e.g. 1250.00)")
        value = Decimal(value.strip())
    if not isinstance(value, Decimal):
        raise FieldProblem(field, "is not a decimal amount")
    if not value.is_finite() or value < 0:
        raise FieldProblem(field, "is not a positive decimal amount (e.g. 1250.00)")
    if value == 0 and not allow_zero:
        raise FieldProblem(field, "must be greater than zero")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise FieldProblem(field, f"is too large (at most {MAX_INTEGER_DIGITS} digits before "
                                  "the point)")
    units = minor_units(currency)
    try:
        exact = value == value.quantize(Decimal(1).scaleb(-units))
    except InvalidOperation:
        exact = False
    if not exact:
        raise FieldProblem(field, f"has more decimal places than {currency}'s {units}")
    return value


def date_bounds(today: date) -> tuple[date, date]:
    """The first and last dates a loan may name: DUE_DATE_YEARS either side of `today`."""
    span = timedelta(days=365 * DUE_DATE_YEARS + DUE_DATE_YEARS // 4)
    return today - span, today + span


def check_due_date(value: object, today: date, field: str = "due_date") -> date:
    """A date within DUE_DATE_YEARS years either side of `today` (nothing downstream overflows)."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise FieldProblem(field, "is not a date in YYYY-MM-DD form") from None
    if not isinstance(value, date):
        raise FieldProblem(field, "is not a date in YYYY-MM-DD form")
    low, high = date_bounds(today)
    if not low <= value <= high:
        raise FieldProblem(field, f"must be within {DUE_DATE_YEARS} years of today")
    return value


def check_start_input(raw: object, today: date) -> None:
    """A case's start input as any client sends it (a JSON object with the `loan` wrapper),
    checked field by field; raises the first FieldProblem. Fields the loan file checks with
    maintained validators beyond these (e-mail, locale, name) are left to the data converter."""
    if not isinstance(raw, Mapping):
        raise FieldProblem("input", "must be a JSON object with a `loan` object")
    loan = raw.get("loan")
    if not isinstance(loan, Mapping):
        raise FieldProblem("loan", "is missing: the input must wrap the loan as {\"loan\": {...}}")
    _check_loan(loan, today)


def _check_loan(loan: Mapping[str, Any], today: date) -> None:
    # A vault-shaped input (issue 18) carries a borrower reference instead of the personal fields.
    vaulted = bool(loan.get("borrower_ref"))
    personal = () if vaulted else ("borrower_name", "phone", "email")
    for name in ("loan_id", *personal, "locale", "timezone", "currency", "amount_overdue",
                 "due_date"):
        if loan.get(name) in (None, ""):
            raise FieldProblem(f"loan.{name}", "is required")
    check_loan_id(loan["loan_id"], "loan.loan_id")
    currency = check_currency(loan["currency"], "loan.currency")
    check_timezone(loan["timezone"], "loan.timezone")
    if not vaulted:
        check_phone(loan["phone"], "loan.phone")
    amount = check_amount(loan["amount_overdue"], currency, "loan.amount_overdue")
    parts = Decimal(0)
    for name in ("interest", "fees"):
        if loan.get(name) is not None:
            parts += check_amount(loan[name], currency, f"loan.{name}", allow_zero=True)
    if parts > amount:
        raise FieldProblem("loan.amount_overdue", "is less than its interest and fees together")
    check_due_date(loan["due_date"], today, "loan.due_date")
