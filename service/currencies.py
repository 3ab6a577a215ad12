"""Currencies: the ISO 4217 codes a loan may carry, and amounts checked against their minor unit."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from service.errors import BadInput
from service.values import parse_amount, shown, text_of

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
    """.split()  # noqa: SIM905 (the table reads better as words)
)

# Currencies whose minor unit is 0 (ISO 4217 "E" column): "100.50 JPY" is a typo, not a debt.
ZERO_DECIMAL_CURRENCIES: Final[frozenset[str]] = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()  # noqa: SIM905
)


def parse_currency(value: str, field: str = "currency") -> str:
    """An active ISO 4217 code, written as ISO writes it."""
    text = text_of(value, field)
    if text.upper() in ISO_4217_CODES and text != text.upper():
        # Not silently upper-cased: a lower-case code usually means a hand-edited file, and
        # the person should know their other values may need a look too.
        raise BadInput(field, f"currency codes are upper case: {text.upper()}")
    if text not in ISO_4217_CODES:
        raise BadInput(field, f"{shown(text)} is not an ISO 4217 currency code")
    return text


def parse_money(
    amount: str | int | Decimal, currency: str, field: str = "amount"
) -> tuple[Decimal, str]:
    """An amount and its currency, the amount exact to the currency's minor unit."""
    value, code = parse_amount(amount, field), parse_currency(currency)
    if code in ZERO_DECIMAL_CURRENCIES and value != value.to_integral_value():
        raise BadInput(field, f"{code} has no minor unit; '{value}' has a fraction")
    return value, code
