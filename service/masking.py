"""Masked forms of borrower data for messages: enough to find the row, never enough to identify
the borrower (messages end up in terminals, CI logs and tickets)."""

from __future__ import annotations

import re


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


# What a value may look like to be quoted in a message: an amount, a date or time, a short code.
# Anything else (letters beyond a three-letter code, spaces, `@`, seven or more digits) could be
# a name, a phone number or an e-mail address that a shifted column put in the wrong field.
_INERT = re.compile(r"[0-9.,:+/_-]{1,24}|[A-Z]{1,3}", re.ASCII)
_MOMENT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?",
    re.ASCII,
)
_MAX_DIGITS = 6  # fewer than any phone number has


def is_inert(text: str) -> bool:
    """Whether `text` can be quoted in a message: it cannot be (part of) personal data."""
    if _MOMENT.fullmatch(text):
        return True
    return bool(_INERT.fullmatch(text)) and sum(ch.isdigit() for ch in text) <= _MAX_DIGITS


def quoted(value: object) -> str:
    """`'1.234' ` (with a trailing space) when the value is inert, else "": for messages written
    `f"{quoted(text)}is not ..."`, which then read "is not ..." with the field named before."""
    text = value if isinstance(value, str) else str(value)
    return f"{text!r} " if is_inert(text) else ""
