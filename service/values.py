"""Validators for every value a person types or a loan file carries.

They run before anything reaches Temporal: a bad value found here costs one line of output, while
the same value found inside a running workflow costs a stuck case. Each validator is pure, takes
the raw value (text from the CLI or a CSV cell; text, int or Decimal from a JSON line) and either
returns the canonical value or raises `BadInput`.

Borrower data (phone, email, name, borrower id) never appears in an error message: messages end
up in terminals, CI logs and tickets. Those validators show a masked form instead.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Final

import babel
import email_validator
import phonenumbers

from contracts import loan_rules
from service.errors import BadInput
from service.masking import mask_email, mask_name, mask_phone, quoted

SUPPORTED_LOCALES: Final = ("en", "zh-CN")

MAX_INTEGER_DIGITS: Final = loan_rules.MAX_INTEGER_DIGITS
MAX_DECIMALS: Final = 4  # the most any ISO 4217 currency has (CLF, UYW); each is checked on its own
MAX_NAME_LENGTH: Final = 200
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit less the angle brackets
MAX_LOCAL_PART: Final = 64  # RFC 5321 again; email-validator leaves it to the server
MAX_IDENTIFIER_LENGTH: Final = loan_rules.MAX_IDENTIFIER_LENGTH
DATE_YEARS: Final = loan_rules.DUE_DATE_YEARS  # dates and instants within this of today
CLOCK_SKEW: Final = timedelta(minutes=5)  # a payment "in the future" by less is the clocks' fault

# ASCII only: `\d` and Decimal() both accept other scripts' digits, which no loan system sends.
_AMOUNT_RE = re.compile(rf"[0-9]+(?:\.[0-9]{{1,{MAX_DECIMALS}}})?", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_IDENTIFIER_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_IDENTIFIER_LENGTH}}}", re.ASCII)
# Digits plus the punctuation people put in numbers; letters (vanity numbers) and extensions
# are not E.164 and an SMS gateway would reject them later.
_PHONE_RE = re.compile(r"\+[0-9 ().-]{1,40}", re.ASCII)
# WeCom's external_userid (`wm...`, `wo...`): 32 characters today; room for more, never quoted.
MAX_WECOM_USERID: Final = 64
_WECOM_USERID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_WECOM_USERID}}}", re.ASCII)
YES_WORDS: Final = frozenset({"true", "yes", "1"})
NO_WORDS: Final = frozenset({"false", "no", "0"})
# Present in some tz databases but never a borrower's zone: "localtime" is the server's own.
_NOT_BORROWER_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})
_TOO_LARGE: Final = f"is too large (at most {MAX_INTEGER_DIGITS} digits before the point)"


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class JsonFraction:
    """A JSON number with a fraction or an exponent (`12.5`, `1e3`), as the loan-file reader
    keeps it: never turned into float, and refused as money (FLOAT_AMOUNT)."""

    text: str


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal | JsonFraction):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def text_of(value: object, field: str, *, allow_int: bool = False) -> str:
    """The stripped text of `value`; blank counts as missing because CSV has no null."""
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadInput(field, f"expected text, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise BadInput(field, "is required but empty")
    return text


# ---------------------------------------------------------------------------------------------
# Validators


def parse_amount(
    value: str | int | Decimal, field: str = "amount", allow_zero: bool = False
) -> Decimal:
    """A money amount, exact to at most MAX_DECIMALS places (the currency's own minor unit is
    checked with it: `service.currencies`). Never goes through float, which cannot hold 0.10."""
    if isinstance(value, float):
        raise BadInput(field, FLOAT_AMOUNT)
    if isinstance(value, Decimal):
        value = _decimal_as_text(value, field)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = text_of(value, field)
    if not _AMOUNT_RE.fullmatch(text):
        raise BadInput(field, _amount_complaint(text))
    integer_digits = text.partition(".")[0].lstrip("0")
    if len(integer_digits) > MAX_INTEGER_DIGITS:
        raise BadInput(field, _TOO_LARGE)
    amount = Decimal(text)
    if amount == 0 and not allow_zero:
        raise BadInput(field, f"{quoted(text)}must be greater than zero")
    return amount


FLOAT_AMOUNT: Final = (
    'is a number with a fraction or an exponent; send amounts as strings such as "12.50" '
    "(a float has already lost the exact value)"
)


def _decimal_as_text(value: Decimal, field: str) -> str:
    """Plain notation for a Decimal (`1E+5` -> `100000`), after bounding its size.

    The bounds come first because formatting `1E+999999999` would build a billion-digit string.
    """
    if not value.is_finite():
        raise BadInput(field, "is not a finite amount")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, so not 'n'/'N'/'F'
    if exponent < -MAX_DECIMALS:
        raise BadInput(field, f"has more than {MAX_DECIMALS} decimal places")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise BadInput(field, _TOO_LARGE)
    return format(value, "f")


def _amount_complaint(text: str) -> str:
    """The most specific reason `text` is not a plain amount, so the fix is obvious."""
    shown = quoted(text)
    if text.startswith("-"):
        return f"{shown}is negative; amounts are positive"
    if "," in text:
        return f"{shown}has a comma; write amounts without thousands separators, e.g. 1250.00"
    if re.fullmatch(rf"[0-9]*\.[0-9]{{{MAX_DECIMALS + 1},}}", text, re.ASCII):
        return f"{shown}has more than {MAX_DECIMALS} decimal places"
    try:
        parsed = Decimal(text)
    except (InvalidOperation, ValueError):
        return f"{shown}is not a decimal amount"
    if not parsed.is_finite():
        return f"{shown}is not a finite amount"
    return f"{shown}is not a plain decimal amount (digits with an optional point, e.g. 1250.00)"


@cache
def _known_zones() -> frozenset[str]:
    # Walking the tz database takes a few ms; once per process is plenty.
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(value: str, field: str = "timezone") -> str:
    """An IANA zone name such as Asia/Shanghai: reminders go out at the borrower's local hour."""
    text = text_of(value, field)
    known = _known_zones()
    complaint = f"{quoted(text)}is not an IANA time zone name (e.g. Asia/Shanghai)"
    # Check membership first, so odd strings ("../etc", NULs, 5 kB of text) never reach the
    # file system; fall back to ZoneInfo alone if this machine lists no zones at all.
    if text in _NOT_BORROWER_ZONES or (known and text not in known):
        raise BadInput(field, complaint)
    try:
        zoneinfo.ZoneInfo(text)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError, ...: all mean "no"
        raise BadInput(field, complaint) from exc
    return text


def parse_phone(value: str, field: str = "phone") -> str:
    """An E.164 number with its country code, returned as `+<digits>`."""
    text = text_of(value, field)
    complaint = f"not a valid E.164 number (value masked: {mask_phone(text)})"
    if not _PHONE_RE.fullmatch(text):
        if not text.startswith("+"):
            # No example number here: a real borrower's number could be the example.
            complaint = (
                f"must be E.164, + and the country code first (value masked: {mask_phone(text)})"
            )
        raise BadInput(field, complaint)
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise BadInput(field, complaint) from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise BadInput(field, complaint)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_NO_SMS: Final = {
    phonenumbers.PhoneNumberType.FIXED_LINE: "a fixed-line number",
    phonenumbers.PhoneNumberType.TOLL_FREE: "a toll-free number",
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
    phonenumbers.PhoneNumberType.UAN: "a universal access number",
    phonenumbers.PhoneNumberType.VOICEMAIL: "a voicemail number",
}


def sms_unusable_reason(e164: str) -> str | None:
    """Why a valid number cannot take an SMS (a landline, a toll-free line), or None if it may.

    `FIXED_LINE_OR_MOBILE` (every North American number) may: the plan cannot tell them apart.
    """
    kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    what = _NO_SMS.get(kind)
    return f"{what}, not a mobile: it may be called but not sent SMS" if what else None


def parse_email(value: str, field: str = "email") -> str:
    """One mailbox, checked and normalised by email-validator (internationalised domains, in
    Unicode or punycode, come back in Unicode and lower case). No DNS: no network is assumed."""
    text = text_of(value, field)
    complaint = f"not a valid email address (value masked: {mask_email(text)})"
    if len(text) > MAX_EMAIL_LENGTH:
        raise BadInput(field, complaint)
    try:
        checked = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise BadInput(field, complaint) from None
    if len(checked.local_part.encode()) > MAX_LOCAL_PART:
        raise BadInput(field, complaint)
    return str(checked.normalized)


def date_bounds(today: date | None = None) -> tuple[date, date]:
    """The dates a loan, a promise or a plan may name: DATE_YEARS either side of today."""
    return loan_rules.date_bounds(today or datetime.now(UTC).date())


def parse_date(value: str, field: str = "date", *, today: date | None = None) -> date:
    """A calendar date written YYYY-MM-DD; other orders are ambiguous (is 02-01 Feb or Jan?).

    Bounded to DATE_YEARS either side of today, so nothing downstream (a ladder step's time, a
    simulation's timers) can overflow on 0001-01-01 or 9999-12-31.
    """
    text = text_of(value, field)
    if not _DATE_RE.fullmatch(text):
        raise BadInput(field, f"{quoted(text)}is not a date in YYYY-MM-DD form")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadInput(field, f"{quoted(text)}is not a real date (expected YYYY-MM-DD)") from None
    low, high = date_bounds(today)
    if not low <= day <= high:
        raise BadInput(field, f"{quoted(text)}is more than {DATE_YEARS} years from today "
                              f"(allowed {low} to {high})")
    return day


def parse_locale(value: str, field: str = "locale") -> str:
    """One of SUPPORTED_LOCALES, negotiated by babel: `en-US` -> `en`, `zh-cn` -> `zh-CN`."""
    text = text_of(value, field)
    tag = text.replace("_", "-")
    # No aliases: a bare `zh` could be written in either script, so it is not guessed.
    chosen = babel.negotiate_locale([tag], list(SUPPORTED_LOCALES), sep="-", aliases={})
    for locale in SUPPORTED_LOCALES:
        if chosen is not None and locale.casefold() == chosen.casefold():
            return locale
    raise BadInput(field, f"{quoted(text)}is not a supported locale "
                          f"(supported: {', '.join(SUPPORTED_LOCALES)})")


def parse_identifier(value: str | int, field: str) -> str:
    """1-64 characters of `A-Za-z0-9._-`: the value ends up inside Temporal workflow ids."""
    text = text_of(value, field, allow_int=True)
    if not _IDENTIFIER_RE.fullmatch(text):
        raise BadInput(
            field, f"{quoted(text)}must be 1-{MAX_IDENTIFIER_LENGTH} characters of letters, "
                   "digits, . _ -",
        )
    return text


LOAN_ID_RULE: Final = (
    f"must be 1-{MAX_IDENTIFIER_LENGTH} characters of letters, digits, . _ -, starting with a "
    "letter or digit, without '..'"
)


def parse_loan_id(value: str | int, field: str = "loan_id") -> str:
    """The loan system's id for the loan; it becomes part of the workflow id and of payment links,
    so `..`, `-` and the like are refused. Never quoted: a shifted column may put a name here."""
    text = text_of(value, field, allow_int=True)
    try:
        return loan_rules.check_loan_id(text, field)
    except loan_rules.FieldProblem:
        raise BadInput(field, LOAN_ID_RULE) from None


def parse_name(value: str, field: str = "borrower_name") -> str:
    """The borrower's name as it should appear in messages to them."""
    if not isinstance(value, str):
        raise BadInput(field, f"expected text, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise BadInput(field, "is required but empty")
    if len(text) > MAX_NAME_LENGTH:
        raise BadInput(
            field,
            f"is {len(text)} characters long, more than {MAX_NAME_LENGTH} "
            f"(masked: {mask_name(text)})",
        )
    if not text.isprintable():
        # Newlines and control characters would break SMS templates and log lines.
        raise BadInput(field, f"contains control characters (masked: {mask_name(text)})")
    return text


def parse_label(value: str, field: str, max_length: int = 64) -> str:
    """Free text such as a product or lender name: printable, one line, bounded."""
    text = text_of(value, field)
    if len(text) > max_length:
        raise BadInput(field, f"is longer than {max_length} characters")
    if not text.isprintable():
        raise BadInput(field, "contains control characters")
    return text


def parse_instant(value: str, field: str, *, not_in_future: bool = False,
                  now: datetime | None = None) -> datetime:
    """An ISO date-time with its UTC offset: a payment time without one is ambiguous.

    Bounded like dates (DATE_YEARS either side of now); with `not_in_future`, at most now (less
    CLOCK_SKEW): a payment is reported once it has been made.
    """
    text = text_of(value, field)
    shown = quoted(text)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        example = "e.g. 2026-06-01T10:30:00+08:00"
        raise BadInput(field, f"{shown}is not an ISO date-time ({example})") from None
    if instant.tzinfo is None:
        raise BadInput(field, f"{shown}has no UTC offset; add one, e.g. +08:00 or Z")
    now = now or datetime.now(UTC)
    low, high = date_bounds(now.date())
    try:
        day = instant.astimezone(UTC).date()
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        day = date.min
    if not low <= day <= high:
        raise BadInput(field, f"{shown}is more than {DATE_YEARS} years from now")
    if not_in_future and instant > now + CLOCK_SKEW:
        raise BadInput(field, f"{shown}is in the future; report a payment once it is made")
    return instant


def parse_note(value: str | None, field: str, max_length: int = 200, default: str = "") -> str:
    """Optional free text (a reason, a note): blank means `default`."""
    if value is None or not value.strip():
        return default
    return parse_label(value, field, max_length)


def parse_person(value: str, field: str) -> str:
    """Who acts: an agent id or name, a supervisor, "system"."""
    return parse_label(value, field, 64)


def parse_choice(value: str, field: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise BadInput(field, f"{quoted(value)}is not one of {', '.join(options)}")
    return value


def parse_wecom_userid(value: str, field: str = "wecom_external_userid") -> str:
    """The borrower's WeCom external-contact id with the lender. It identifies the borrower, so
    it is never quoted back, not even masked."""
    text = text_of(value, field)
    if not _WECOM_USERID_RE.fullmatch(text):
        raise BadInput(field, f"must be 1-{MAX_WECOM_USERID} characters of letters, digits, _ "
                              "and - (the external_userid WeCom gives, e.g. wm...)")
    return text


def parse_yes_no(value: str | bool | int, field: str) -> bool:
    """A yes-or-no field: true/false, yes/no, 1/0 in any case (a JSON boolean, or 1 and 0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in YES_WORDS:
            return True
        if word in NO_WORDS:
            return False
    raise BadInput(field, "must be true or false (or yes/no, 1/0)")
