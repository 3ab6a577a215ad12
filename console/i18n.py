"""English and Simplified Chinese: the console's labels, and amounts and times formatted for the
reader's locale (babel). A missing Chinese label falls back to the English one."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.numbers import format_currency, format_percent

LANGS: Final = ("en", "zh-CN")
DEFAULT_LANG: Final = "en"
_BABEL: Final = {"en": "en_US", "zh-CN": "zh_Hans_CN"}

LOCALES: Final = Path(__file__).resolve().parent / "locales"


def _catalogue(lang: str) -> dict[str, str]:
    """console/locales/<lang>.json: one label per key (a message catalogue a translator edits)."""
    loaded: dict[str, str] = json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))
    return loaded


_CATALOGUES: Final = {lang: _catalogue(lang) for lang in LANGS}
EN: Final = _CATALOGUES["en"]


def lang_of(value: str | None) -> str:
    return value if value in LANGS else DEFAULT_LANG


def translate(lang: str, key: str, **values: object) -> str:
    text = _CATALOGUES.get(lang, EN).get(key) or EN.get(key, key)
    return text.format(**values) if values else text


def money(amount: Decimal | str | int | None, currency: str | None, lang: str) -> str:
    """`¥1,200.00` for CNY in Chinese, `CN¥1,200.00` in English, `$80.00` for USD."""
    if amount is None or not currency:
        return "" if amount is None else str(amount)
    return format_currency(Decimal(str(amount)), currency, locale=_BABEL[lang_of(lang)])


def percent(value: Decimal | None, lang: str) -> str:
    return "—" if value is None else format_percent(value, "#,##0.0%",
                                                     locale=_BABEL[lang_of(lang)])


def when(instant: datetime | None, zone: str, lang: str) -> str:
    """The instant on the wall clock of `zone`, in the reader's language."""
    if instant is None:
        return ""
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return format_datetime(instant.astimezone(tz), "yyyy-MM-dd HH:mm zzz",
                           locale=_BABEL[lang_of(lang)])
