"""Validators for every value a person types or a loan file carries.

They run before anything reaches Temporal: a bad value found here costs one line of output, while
the same value found inside a running workflow costs a stuck case. Each validator is pure, takes
the raw value (text from the CLI or a CSV cell; text, int or Decimal from a JSON line) and either
returns the canonical value or raises `InputError`.

Borrower data (phone, email, name, borrower id) never appears in an error message: messages end
up in terminals, CI logs and tickets. Those validators show a masked form instead.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Final

import phonenumbers

SUPPORTED_LOCALES: Final = ("en", "zh-CN")

MAX_INTEGER_DIGITS: Final = 15
MAX_NAME_LENGTH: Final = 200
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit less the angle brackets
MAX_IDENTIFIER_LENGTH: Final = 64

# ISO 4217 List One alphabetic codes in use as of 2026, including fund codes (BOV, CLF, ...),
# precious metals, bond units and XDR, because a loan system may legitimately carry them.
# Left out on purpose: XTS (reserved for testing) and XXX (no currency), plus recently withdrawn
# codes that a loan system may still emit by mistake: ANG (replaced by XCG in 2025), ZWL (by ZWG
# in 2024), SLL (by SLE), HRK (Croatia joined the euro in 2023), BGN (Bulgaria, 2026), CUC.
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
    """.split()
)

# Currencies whose minor unit is 0 (ISO 4217 "E" column): "100.50 JPY" is a typo, not a debt.
ZERO_DECIMAL_CURRENCIES: Final[frozenset[str]] = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)

# ASCII only: `\d` and Decimal() both accept other scripts' digits, which no loan system sends.
_AMOUNT_RE = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?", re.ASCII)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_IDENTIFIER_LENGTH, re.ASCII)
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


class InputError(ValueError):
    """A user-supplied value is unusable; `str()` is one line such as `amount: '1.234' has ...`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---------------------------------------------------------------------------------------------
# Masking: keep just enough to let someone find the row, never enough to identify the borrower.


def _keep_ascii_alnum(ch: str) -> str:
    return ch if ch.isascii() and ch.isalnum() else "*"


def mask_phone(s: str) -> str:
    """`+8613800138000` -> `+86*********00`; short or odd input is starred out completely."""
    s = str(s)
    if len(s) < 8:
        return "*" * len(s)
    head = "".join(ch if ch in "+0123456789" else "*" for ch in s[:3])
    tail = "".join(ch if ch in "0123456789" else "*" for ch in s[-2:])
    # Capped so a pasted paragraph doesn't produce a paragraph of stars.
    return head + "*" * min(len(s) - 5, 12) + tail


def mask_email(s: str) -> str:
    """`john@example.com` -> `j***@e***.com`."""
    s = str(s)
    local, at, domain = s.rpartition("@")
    if not at:
        return _keep_ascii_alnum(s[:1]) + "***" if s else ""
    masked = f"{_keep_ascii_alnum(local[:1])}***@{_keep_ascii_alnum(domain[:1])}***"
    _, dot, tld = domain.rpartition(".")
    if dot and 0 < len(tld) <= 10 and tld.isascii() and tld.isalpha():
        masked += "." + tld
    return masked


def mask_name(s: str) -> str:
    """`Zhang Wei` -> `Z***`: a fixed-width tail, so not even the length leaks."""
    s = str(s).strip()
    if not s:
        return ""
    return (s[0] if s[0].isalpha() else "*") + "***"


# ---------------------------------------------------------------------------------------------
# Helpers


def _show(value: object, limit: int = 40) -> str:
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


def _text(value: object, field: str, *, allow_int: bool = False) -> str:
    """The stripped text of `value`; blank counts as missing because CSV has no null."""
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(field, f"expected text, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise InputError(field, "is required but empty")
    return text


# ---------------------------------------------------------------------------------------------
# Validators


def parse_amount(
    value: str | int | Decimal, field: str = "amount", allow_zero: bool = False
) -> Decimal:
    """A money amount, exact to the cent. Never goes through float, which cannot hold 0.10."""
    if isinstance(value, float):
        raise InputError(
            field, 'send amounts as strings such as "12.50" (money never passes through float)'
        )
    if isinstance(value, Decimal):
        value = _decimal_as_text(value, field)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, field)
    if not _AMOUNT_RE.fullmatch(text):
        raise InputError(field, _amount_complaint(text))
    integer_digits = text.partition(".")[0].lstrip("0")
    if len(integer_digits) > MAX_INTEGER_DIGITS:
        raise InputError(field, f"{_show(text)} {_TOO_LARGE}")
    amount = Decimal(text)
    if amount == 0 and not allow_zero:
        raise InputError(field, f"{_show(text)} must be greater than zero")
    return amount


def _decimal_as_text(value: Decimal, field: str) -> str:
    """Plain notation for a Decimal from JSON (`1E+5` -> `100000`), after bounding its size.

    The bounds come first because formatting `1E+999999999` would build a billion-digit string.
    """
    if not value.is_finite():
        raise InputError(field, f"{_show(str(value))} is not a finite amount")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, so not 'n'/'N'/'F'
    if exponent < -2:
        raise InputError(field, f"{_show(str(value))} has more than 2 decimal places")
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise InputError(field, f"{_show(str(value))} {_TOO_LARGE}")
    return format(value, "f")


def _amount_complaint(text: str) -> str:
    """The most specific reason `text` is not a plain amount, so the fix is obvious."""
    shown = _show(text)
    if text.startswith("-"):
        return f"{shown} is negative; amounts are positive"
    if "," in text:
        return f"{shown} has a comma; write amounts without thousands separators, e.g. 1250.00"
    if re.fullmatch(r"[0-9]*\.[0-9]{3,}", text, re.ASCII):
        return f"{shown} has more than 2 decimal places"
    try:
        parsed = Decimal(text)
    except (InvalidOperation, ValueError):
        return f"{shown} is not a decimal amount"
    if not parsed.is_finite():
        return f"{shown} is not a finite amount"
    return f"{shown} is not a plain decimal amount (digits with an optional point, e.g. 1250.00)"


def parse_currency(value: str, field: str = "currency") -> str:
    """An active ISO 4217 code, written as ISO writes it."""
    text = _text(value, field)
    if text.upper() in ISO_4217_CODES and text != text.upper():
        # Not silently upper-cased: a lower-case code usually means a hand-edited file, and
        # the person should know their other values may need a look too.
        raise InputError(field, f"currency codes are upper case: {text.upper()}")
    if text not in ISO_4217_CODES:
        raise InputError(field, f"{_show(text)} is not an ISO 4217 currency code")
    return text


@cache
def _known_zones() -> frozenset[str]:
    # Walking the tz database takes a few ms; once per process is plenty.
    return frozenset(zoneinfo.available_timezones())


def parse_timezone(value: str, field: str = "timezone") -> str:
    """An IANA zone name such as Asia/Shanghai: reminders go out at the borrower's local hour."""
    text = _text(value, field)
    known = _known_zones()
    # Check membership first, so odd strings ("../etc", NULs, 5 kB of text) never reach the
    # file system; fall back to ZoneInfo alone if this machine lists no zones at all.
    if text in _NOT_BORROWER_ZONES or (known and text not in known):
        raise InputError(field, f"{_show(text)} is not an IANA time zone name (e.g. Asia/Shanghai)")
    try:
        zoneinfo.ZoneInfo(text)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError, ...: all mean "no"
        raise InputError(
            field, f"{_show(text)} is not an IANA time zone name (e.g. Asia/Shanghai)"
        ) from exc
    return text


def parse_phone(value: str, field: str = "phone") -> str:
    """An E.164 number with its country code, returned as `+<digits>`."""
    text = _text(value, field)
    complaint = f"not a valid E.164 number (value masked: {mask_phone(text)})"
    if not _PHONE_RE.fullmatch(text):
        if not text.startswith("+"):
            # No example number here: a real borrower's number could be the example.
            complaint = (
                f"must be E.164, + and the country code first (value masked: {mask_phone(text)})"
            )
        raise InputError(field, complaint)
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InputError(field, complaint) from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise InputError(field, complaint)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_email(value: str, field: str = "email") -> str:
    """One address, `local@domain.tld`; the domain is lower-cased since DNS ignores case."""
    text = _text(value, field)
    match = _EMAIL_RE.fullmatch(text) if len(text) <= MAX_EMAIL_LENGTH else None
    if match is None or len(match["local"]) > 64:
        raise InputError(field, f"not a valid email address (value masked: {mask_email(text)})")
    return f"{match['local']}@{match['domain'].lower()}"


def parse_date(value: str, field: str = "date") -> date:
    """A calendar date written YYYY-MM-DD; other orders are ambiguous (is 02-01 Feb or Jan?)."""
    text = _text(value, field)
    if not _DATE_RE.fullmatch(text):
        raise InputError(field, f"{_show(text)} is not a date in YYYY-MM-DD form")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(field, f"{_show(text)} is not a real date (expected YYYY-MM-DD)") from None


def parse_locale(value: str, field: str = "locale") -> str:
    """One of SUPPORTED_LOCALES, in its canonical spelling (`zh-cn` -> `zh-CN`)."""
    text = _text(value, field)
    wanted = text.replace("_", "-").casefold()
    for locale in SUPPORTED_LOCALES:
        if locale.casefold() == wanted:
            return locale
    raise InputError(
        field, f"{_show(text)} is not a supported locale (one of {', '.join(SUPPORTED_LOCALES)})"
    )


def parse_identifier(value: str | int, field: str, *, echo: bool = True) -> str:
    """1-64 characters of `A-Za-z0-9._-`: the value ends up inside Temporal workflow ids."""
    text = _text(value, field, allow_int=True)
    if not _IDENTIFIER_RE.fullmatch(text):
        shown = f"{_show(text)} " if echo else ""
        raise InputError(
            field,
            f"{shown}must be 1-{MAX_IDENTIFIER_LENGTH} characters of letters, digits, . _ -",
        )
    return text


def parse_loan_id(value: str | int, field: str = "loan_id") -> str:
    """The loan system's id for the loan; it becomes part of the workflow id."""
    return parse_identifier(value, field)


def parse_name(value: str, field: str = "borrower_name") -> str:
    """The borrower's name as it should appear in messages to them."""
    if not isinstance(value, str):
        raise InputError(field, f"expected text, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise InputError(field, "is required but empty")
    if len(text) > MAX_NAME_LENGTH:
        raise InputError(
            field,
            f"is {len(text)} characters long, more than {MAX_NAME_LENGTH} "
            f"(masked: {mask_name(text)})",
        )
    if not text.isprintable():
        # Newlines and control characters would break SMS templates and log lines.
        raise InputError(field, f"contains control characters (masked: {mask_name(text)})")
    return text


def parse_label(value: str, field: str, max_length: int = 64) -> str:
    """Free text such as a product or lender name: printable, one line, bounded."""
    text = _text(value, field)
    if len(text) > max_length:
        raise InputError(field, f"{_show(text)} is longer than {max_length} characters")
    if not text.isprintable():
        raise InputError(field, f"{_show(text)} contains control characters")
    return text
