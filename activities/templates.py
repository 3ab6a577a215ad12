"""Borrower messages: one jinja2 template per message, channel and locale.

Files live beside this module as `templates/<locale>/<template>.<channel>.j2`, for the message
channels of the channel table (`contracts/channels.py`). Names starting with `_` are partials
(opt-out line, validation notice, footers), not templates. On a channel whose messages carry a
subject (e-mail) a template's first line is `Subject: ...`, then a blank line, then the plain-text
body; on any other (SMS) the message is rendered to one line: whitespace runs collapse to a single
space.

Context flags every template honours: `opt_out` (an SMS ends with the locale's opt-out line, an
email with an unsubscribe line carrying `unsubscribe_link`) and `validation_notice` (adds the
Regulation F validation block, with `dispute_by`; not in receipts or the write-off notice, which
are no attempt to collect, and always in `validation_notice` itself).

Every template must exist in every locale in `LOCALES`: there is no locale fallback, and
`known_templates()` only lists the channels a template has in all of them, which is what the policy
validator checks a step against.

The context holds already formatted values. Missing variables fail loudly (`StrictUndefined`);
only the template-specific variables in `_DEFAULTS` get a default when absent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from contracts.channels import CHANNELS, message_channels

LOCALES = ("en", "zh-CN")
TEMPLATE_DIR = Path(__file__).with_name("templates")

_LOCALE_BY_KEY = {locale.lower(): locale for locale in LOCALES}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FILE = re.compile(r"^(?P<template>[a-z][a-z0-9_]*)\.(?P<channel>[a-z][a-z0-9_]*)\.j2$")


class UnknownTemplateError(TemplateNotFound, ValueError):
    """No such template for this channel and locale (or no such channel or locale)."""

    def __init__(self, template: str, channel: str, locale: str, reason: str = "") -> None:
        message = f"no template {template!r} for channel {channel!r} in locale {locale!r}"
        if reason:
            message = f"{message}: {reason}"
        super().__init__(f"{locale}/{template}.{channel}.j2", message)
        self.template = template
        self.channel = channel
        self.locale = locale


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None  # None for SMS
    body: str


def _days_en(n: Any) -> str:
    """`1 day`, `3 days` (used as `{{ days_overdue|days }}` in the English templates)."""
    return f"{n} day" if abs(int(n)) == 1 else f"{n} days"


def _make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["days"] = _days_en
    return env


ENV = _make_environment()

# Template-specific variables that get a default when the caller leaves them out. Anything else a
# template uses must be in the context. An empty string means "not known": the templates that use
# such a variable word the message without it (e.g. no refund sentence when there is no `excess`).
_DEFAULTS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "paid_amount": lambda c: c["amount"],
    "excess": lambda c: "",
    "promised_amount": lambda c: c["amount"],
    "promised_date": lambda c: "",
    "installment_amount": lambda c: c["amount"],
    "installment_due": lambda c: c["due_date"],
    "settlement_amount": lambda c: c["amount"],
    "agency_name": lambda c: "",
    "respond_by": lambda c: "",
    "days_before_due": lambda c: max(0, -int(c["days_overdue"])),
}
# Where a default would be wrong: a partial payment's amount is never the outstanding balance.
_NO_DEFAULT: dict[str, frozenset[str]] = {"payment_ack": frozenset({"paid_amount"})}


def normalize_locale(locale: str, template: str = "*", channel: str = "*") -> str:
    """`zh-cn` -> `zh-CN`; raises `UnknownTemplateError` for a locale not in `LOCALES`."""
    canonical = _LOCALE_BY_KEY.get(locale.lower()) if isinstance(locale, str) else None
    if canonical is None:
        known = ", ".join(LOCALES)
        raise UnknownTemplateError(
            str(template), str(channel), str(locale), f"unknown locale (known: {known})"
        )
    return canonical


@lru_cache(maxsize=1)
def _scan() -> dict[str, frozenset[str]]:
    per_locale: list[dict[str, set[str]]] = []
    for locale in LOCALES:
        found: dict[str, set[str]] = {}
        folder = TEMPLATE_DIR / locale
        for path in folder.glob("*.j2") if folder.is_dir() else ():
            match = _FILE.match(path.name)
            if match:
                found.setdefault(match["template"], set()).add(match["channel"])
        per_locale.append(found)
    names = set.intersection(*(set(found) for found in per_locale)) if per_locale else set()
    result: dict[str, frozenset[str]] = {}
    for name in sorted(names):
        channels = frozenset.intersection(*(frozenset(found[name]) for found in per_locale))
        if channels:
            result[name] = channels
    return result


def known_templates() -> dict[str, frozenset[str]]:
    """Template name -> the message channels it has in every locale."""
    # Filtered here, not in the cached scan: the table may gain a row after the first call.
    channels = set(message_channels())
    found = {name: have & channels for name, have in _scan().items()}
    return {name: have for name, have in found.items() if have}


def _with_defaults(template: str, context: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(context)
    skip = _NO_DEFAULT.get(template, frozenset())
    for name, default in _DEFAULTS.items():
        if name not in values and name not in skip:
            # A missing base variable is left missing: the template fails on it, loudly.
            with contextlib.suppress(KeyError):
                values[name] = default(values)
    return values


def _clean_email_body(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render(
    template: str, channel: str, locale: str, context: Mapping[str, Any]
) -> RenderedMessage:
    """Render one message. Raises `UnknownTemplateError` for an unknown template, channel or
    locale, and `jinja2.UndefinedError` when the context lacks a variable the template uses."""
    canonical = normalize_locale(locale, template, channel)
    known = message_channels()
    if channel not in known:
        raise UnknownTemplateError(
            template, channel, canonical, f"unknown channel (known: {', '.join(known)})"
        )
    if not isinstance(template, str) or not _NAME.match(template):
        raise UnknownTemplateError(str(template), channel, canonical, "not a template name")
    available = known_templates().get(template)
    if available is None or channel not in available:
        has = ", ".join(sorted(available)) if available else "none"
        raise UnknownTemplateError(
            template, channel, canonical, f"channels available in every locale: {has}"
        )
    try:
        tmpl = ENV.get_template(f"{canonical}/{template}.{channel}.j2")
    except TemplateNotFound as exc:  # removed since the scan
        raise UnknownTemplateError(template, channel, canonical, str(exc)) from exc
    text = tmpl.render(_with_defaults(template, context))

    if not CHANNELS[channel].subject:
        return RenderedMessage(subject=None, body=re.sub(r"\s+", " ", text).strip())

    where = f"{canonical}/{template}.{channel}.j2"
    first, _, rest = text.lstrip("\n").partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"template {where} must start with a 'Subject:' line")
    subject = first.removeprefix("Subject:").strip()
    if not subject:
        raise ValueError(f"template {where} renders an empty subject")
    return RenderedMessage(subject=subject, body=_clean_email_body(rest))


@dataclass(frozen=True)
class LinkBuilder:
    """Links every message carries; configuration of the sender, not of the case."""

    payment_base: str

    def complete(self, loan_ref: str, context: Mapping[str, Any]) -> dict[str, Any]:
        base = self.payment_base.rstrip("/")
        full = dict(context)
        full.setdefault("payment_link", f"{base}/{loan_ref}")
        full.setdefault("unsubscribe_link", f"{base}/{loan_ref}/unsubscribe")
        return full
