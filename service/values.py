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
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Final

import phonenumbers

from service.errors import BadInput
from service.masking import mask_email, mask_name, mask_phone

SUPPORTED_LOCALES: Final = ("en", "zh-CN")

MAX_INTEGER_DIGITS: Final = 15
MAX_NAME_LENGTH: Final = 200
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit less the angle brackets
MAX_IDENTIFIER_LENGTH: Final = 64

# ASCII only: `\d` and Decimal() both accept other scripts' digits, which no loan system sends.
_AMOUNT_RE = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_IDENTIFIER_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_IDENTIFIER_LENGTH}}}", re.ASCII)
# Digits plus the punctuation people put in numbers; letters (vanity numbers) and extensions
# are not E.164 and an SMS gateway would reject them later.
_PHONE_RE = re.compile(r"\+[0-9 ().-]{1,40}", re.ASCII)
# Deliberately narrower than RFC 5322 (no quoted local parts, no IP literals): anything outside
# it is far more often a typo than a real mailbox, and the email provider is stricter still.
_EMAIL_RE = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})",
    re.ASCII,
)
# Present in some tz databases but never a borrower's zone: "localtime" is the server's own.
_NOT_BORROWER_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})
_TOO_LARGE: Final = f"is too large (at most {MAX_INTEGER_DIGITS} digits before the point)"


# ---------------------------------------------------------------------------------------------
# Helpers


def shown(value: object, limit: int = 40) -> str:
    """The offending value for a message, on one line and of bounded length."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
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
    """A money amount, exact to the cent. Never goes through float, which cannot hold 0.10."""
    if isinstance(value, float):
        raise BadInput(
            field, 'send amounts as strings such as "12.50" (money never passes through float)'
        )
    if isinstance(value, Decimal):
        value = _decimal_as_text(value, field)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = text_of(value, field)
    if not _AMOUNT_RE.fullmatch(text):
        raise BadInput(field, _amount_complaint(text))
    integer_digits = text.partition(".")[0].lstrip("0")
    if len(integer_digits) > MAX_INTEGER_DIGITS:
        raise BadInput(field, f"{shown(text)} {_TOO_LARGE}")
    amount = Decimal(text)
    if amount == 0 and not allow_zero:
        raise BadInput(field, f"{shown(text)} must be greater than zero")
    return amount


def _decimal_as_text(value: Decimal, field: str) -> str:
    """Plain notation for a Decimal from JSON (`1E+5` -> `100000`), after bounding its size.

    The bounds come first because formatting `1E+999999999` would build a billion-digit string.
    """
    if not value.is_finite():
        raise BadInput(field, f"{shown(str(value))} is not a finite amount")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, so not 'n'/'N'/'F'
    if exponent < -2:
        raise BadInput(field, f"{shown(str(value))} has more than 2 decimal places")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise BadInput(field, f"{shown(str(value))} {_TOO_LARGE}")
    return format(value, "f")


def _amount_complaint(text: str) -> str:
    """The most specific reason `text` is not a plain amount, so the fix is obvious."""
    quoted = shown(text)
    if text.startswith("-"):
        return f"{quoted} is negative; amounts are positive"
    if "," in text:
        return f"{quoted} has a comma; write amounts without thousands separators, e.g. 1250.00"
    if re.fullmatch(r"[0-9]*\.[0-9]{3,}", text, re.ASCII):
        return f"{quoted} has more than 2 decimal places"
    try:
        parsed = Decimal(text)
    except (InvalidOperation, ValueError):
        return f"{quoted} is not a decimal amount"
    if not parsed.is_finite():
        return f"{quoted} is not a finite amount"
    return f"{quoted} is not a plain decimal amount (digits with an optional point, e.g. 1250.00)"


@cache
def _known_zones() -> frozenset[str]:
    # Walking the tz database takes a few ms; once per process is plenty.
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(value: str, field: str = "timezone") -> str:
    """An IANA zone name such as Asia/Shanghai: reminders go out at the borrower's local hour."""
    text = text_of(value, field)
    known = _known_zones()
    # Check membership first, so odd strings ("../etc", NULs, 5 kB of text) never reach the
    # file system; fall back to ZoneInfo alone if this machine lists no zones at all.
    if text in _NOT_BORROWER_ZONES or (known and text not in known):
        raise BadInput(field, f"{shown(text)} is not an IANA time zone name (e.g. Asia/Shanghai)")
    try:
        zoneinfo.ZoneInfo(text)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError, ...: all mean "no"
        raise BadInput(
            field, f"{shown(text)} is not an IANA time zone name (e.g. Asia/Shanghai)"
        ) from exc
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


def parse_email(value: str, field: str = "email") -> str:
    """One address, `local@domain.tld`; the domain is lower-cased since DNS ignores case."""
    text = text_of(value, field)
    match = _EMAIL_RE.fullmatch(text) if len(text) <= MAX_EMAIL_LENGTH else None
    if match is None or len(match["local"]) > 64:
        raise BadInput(field, f"not a valid email address (value masked: {mask_email(text)})")
    return f"{match['local']}@{match['domain'].lower()}"


def parse_date(value: str, field: str = "date") -> date:
    """A calendar date written YYYY-MM-DD; other orders are ambiguous (is 02-01 Feb or Jan?)."""
    text = text_of(value, field)
    if not _DATE_RE.fullmatch(text):
        raise BadInput(field, f"{shown(text)} is not a date in YYYY-MM-DD form")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput(field, f"{shown(text)} is not a real date (expected YYYY-MM-DD)") from None


def parse_locale(value: str, field: str = "locale") -> str:
    """One of SUPPORTED_LOCALES, in its canonical spelling (`zh-cn` -> `zh-CN`)."""
    text = text_of(value, field)
    wanted = text.replace("_", "-").casefold()
    for locale in SUPPORTED_LOCALES:
        if locale.casefold() == wanted:
            return locale
    raise BadInput(
        field, f"{shown(text)} is not a supported locale (one of {', '.join(SUPPORTED_LOCALES)})"
    )


def parse_identifier(value: str | int, field: str, *, echo: bool = True) -> str:
    """1-64 characters of `A-Za-z0-9._-`: the value ends up inside Temporal workflow ids."""
    text = text_of(value, field, allow_int=True)
    if not _IDENTIFIER_RE.fullmatch(text):
        quoted = f"{shown(text)} " if echo else ""
        raise BadInput(
            field,
            f"{quoted}must be 1-{MAX_IDENTIFIER_LENGTH} characters of letters, digits, . _ -",
        )
    return text


def parse_loan_id(value: str | int, field: str = "loan_id") -> str:
    """The loan system's id for the loan; it becomes part of the workflow id."""
    return parse_identifier(value, field)


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
        raise BadInput(field, f"{shown(text)} is longer than {max_length} characters")
    if not text.isprintable():
        raise BadInput(field, f"{shown(text)} contains control characters")
    return text


def parse_instant(value: str, field: str) -> datetime:
    """An ISO date-time with its UTC offset: a payment time without one is ambiguous."""
    text = text_of(value, field)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        example = "e.g. 2026-06-01T10:30:00+08:00"
        raise BadInput(field, f"{shown(text)} is not an ISO date-time ({example})") from None
    if instant.tzinfo is None:
        raise BadInput(field, f"{shown(text)} has no UTC offset; add one, e.g. +08:00 or Z")
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
        raise BadInput(field, f"{value[:40]!r} is not one of {', '.join(options)}")
    return value
