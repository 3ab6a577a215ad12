"""What contacts and legal steps cost, per currency: the lab's price list (lab/prices.toml).

Money is Decimal throughout. A voice reminder and an agent call are priced by the minute and a
number of minutes per attempt; a message, a visit, a lawyer's letter and a filing per item.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from service.errors import BadInput

DEFAULT_PRICES: Final = Path(__file__).with_name("prices.toml")


@dataclass(frozen=True)
class Prices:
    sms: Decimal
    email: Decimal
    wecom: Decimal
    voice_minute: Decimal
    agent_minute: Decimal
    visit: Decimal
    letter: Decimal
    filing: Decimal
    voice_minutes_per_call: Decimal
    agent_minutes_per_call: Decimal

    def per_contact(self, channel: str) -> Decimal:
        """One attempt on `channel` (a channel without a price costs nothing)."""
        if channel == "voice":
            return self.voice_minute * self.voice_minutes_per_call
        if channel == "call":
            return self.agent_minute * self.agent_minutes_per_call
        value = getattr(self, channel, None)
        return value if isinstance(value, Decimal) else Decimal(0)

    def per_legal_action(self, action: str) -> Decimal:
        """A lawyer's letter or a filing; an agency placement is paid by commission, not here."""
        return {"lawyer_letter": self.letter, "filing": self.filing}.get(action, Decimal(0))


PRICE_FIELDS: Final = tuple(f.name for f in fields(Prices))


def load_prices(path: str | Path = DEFAULT_PRICES) -> dict[str, Prices]:
    """Prices by ISO 4217 currency; a missing or bad price is bad input naming it."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(source, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(source, f"TOML syntax error: {exc}") from None
    prices: dict[str, Prices] = {}
    for currency, table in data.items():
        if len(currency) != 3 or not currency.isupper() or not isinstance(table, dict):
            raise BadInput(source, f"{currency}: expected a table per ISO 4217 currency")
        unknown = sorted(set(table) - set(PRICE_FIELDS))
        if unknown:
            raise BadInput(source, f"{currency}.{unknown[0]}: unknown price "
                                   f"(known: {', '.join(PRICE_FIELDS)})")
        values: dict[str, Decimal] = {}
        for name in PRICE_FIELDS:
            if name not in table:
                raise BadInput(source, f"{currency}.{name}: is required")
            values[name] = _amount(table[name], f"{currency}.{name}", source)
        prices[currency] = Prices(**values)
    return prices


def _amount(value: object, where: str, source: str) -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise BadInput(source, f"{where}: give an exact amount as a string, e.g. \"0.05\"")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise BadInput(source, f"{where}: {value!r} is not an amount") from None
    if not amount.is_finite() or amount < 0:
        raise BadInput(source, f"{where}: {value!r} is not an amount of 0 or more")
    return amount
