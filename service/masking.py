"""Masked forms of borrower data for messages: enough to find the row, never enough to identify
the borrower (messages end up in terminals, CI logs and tickets)."""

from __future__ import annotations


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
