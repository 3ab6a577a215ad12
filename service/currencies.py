"""Currencies: the ISO 4217 codes a loan may carry, and amounts checked against their minor unit."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Final

from babel.numbers import get_currency_precision

from contracts.loan_rules import ISO_4217_CODES
from service.errors import BadInput
from service.masking import quoted
from service.values import parse_amount, text_of

__all__ = ["ISO_4217_CODES", "minor_units", "parse_currency", "parse_money"]

# babel's precision is CLDR's `digits`: the decimals people write in practice. Where CLDR rounds
# below ISO 4217's minor unit, a loan system may still send ISO's decimals, and they are exact
# money: these are ISO 4217's own figures for those codes (tests check babel still differs).
ISO_WHERE_CLDR_DIFFERS: Final[dict[str, int]] = {
    **dict.fromkeys(
        "AFN ALL COP HUF IDR IRR KPW LAK LBP MGA MMK SOS SYP YER".split(), 2  # noqa: SIM905
    ),
    "IQD": 3,
}


@cache
def minor_units(code: str) -> int:
    """Decimal places of the currency's minor unit (ISO 4217): 2 for CNY, 0 for JPY, 3 for KWD."""
    return ISO_WHERE_CLDR_DIFFERS.get(code, get_currency_precision(code))


def parse_currency(value: str, field: str = "currency") -> str:
    """An active ISO 4217 code, written as ISO writes it."""
    text = text_of(value, field)
    if text.upper() in ISO_4217_CODES and text != text.upper():
        # Not silently upper-cased: a lower-case code usually means a hand-edited file, and
        # the person should know their other values may need a look too.
        raise BadInput(field, f"currency codes are upper case: {text.upper()}")
    if text not in ISO_4217_CODES:
        raise BadInput(field, f"{quoted(text)}is not an ISO 4217 currency code")
    return text


def fraction_problem(value: Decimal, code: str) -> str | None:
    """Why `value` is not exact in `code`'s minor unit, or None."""
    units = minor_units(code)
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent <= units:
        return None
    if units == 0:
        return f"{code} has no minor unit; {quoted(format(value, 'f'))}has a fraction"
    return f"{code} has {units} decimal places; {quoted(format(value, 'f'))}has more"


def parse_money(
    amount: str | int | Decimal, currency: str, field: str = "amount"
) -> tuple[Decimal, str]:
    """An amount and its currency, the amount exact to the currency's minor unit."""
    value, code = parse_amount(amount, field), parse_currency(currency)
    problem = fraction_problem(value, code)
    if problem:
        raise BadInput(field, problem)
    return value, code
