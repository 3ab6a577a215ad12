"""Which jurisdiction a loan is in, and which rule pack's contact rules follow from it.

Pure functions, no I/O: the caller hands in the policy and the loaded rule packs. A loan's
jurisdiction is its explicit `jurisdiction` (ISO 3166-1 alpha-2, optionally an ISO 3166-2
subdivision such as US-NY), else the country of its phone number. The pack is the most specific
one covering it; a loan no pack covers is refused, never given another country's rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import phonenumbers

from contracts.messages import LoanInput
from contracts.policy import PolicySettings, RulePack

# ISO 3166-1 alpha-2, the 249 officially assigned codes, generated from pycountry 26.2.16:
# python -c "import pycountry; print(' '.join(sorted(c.alpha_2 for c in pycountry.countries)))"
# A table rather than a dependency: the codes change about once a decade.
COUNTRIES = frozenset(
    {
        "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX",
        "AZ", "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ",
        "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK",
        "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM",
        "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR",
        "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
        "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN",
        "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN",
        "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV",
        "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ",
        "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI",
        "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
        "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC",
        "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV",
        "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR",
        "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
        "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
    }
)
# ISO 3166-2 codes are the country, a hyphen and 1-3 letters or digits (every one of the 5,046 in
# pycountry has this form); the subdivision part is checked for form only.
_FORM = re.compile(r"([A-Z]{2})(?:-([A-Z0-9]{1,3}))?")

Source = Literal["column", "phone"]


class JurisdictionError(LookupError, ValueError):
    """A loan's jurisdiction is unusable or has no rules; `field` is the loan field to fix.

    Messages are one line, say "jurisdiction" and carry no borrower data. Both a LookupError and
    a ValueError: callers that refuse bad input catch either, and the policy activity treats a
    LookupError as not worth retrying.
    """

    field = "jurisdiction"


@dataclass(frozen=True)
class JurisdictionChoice:
    """What `policy explain` shows: the jurisdiction, where it came from, the pack and why."""

    jurisdiction: str  # "US-NY", "CN"
    source: Source  # the loan's `jurisdiction` column, or its phone number's country
    pack: str
    reason: str


def normalise(code: str) -> str:
    """`code` upper-cased and checked: an ISO 3166-1 country, or `CC-XXX` for a subdivision.

    The value is never echoed: in a file with shifted columns it may be a name or a phone number.
    """
    text = code.strip().upper()
    match = _FORM.fullmatch(text)
    if match is None or match.group(1) not in COUNTRIES:
        raise JurisdictionError(
            "jurisdiction is not an ISO 3166 country or subdivision code (e.g. US or US-NY)"
        )
    return text


def country_of(jurisdiction: str) -> str:
    return jurisdiction.split("-", 1)[0]


def loan_jurisdiction(loan: LoanInput) -> tuple[str, Source]:
    """The loan's jurisdiction and its source: the explicit column wins over the phone."""
    if loan.jurisdiction.strip():
        return normalise(loan.jurisdiction), "column"
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(loan.phone, None))
    except phonenumbers.NumberParseException:
        region = None
    # None: no country's numbering plan holds the number; "001": a non-geographic number (+800).
    if region is None or region not in COUNTRIES:
        raise JurisdictionError(
            "no jurisdiction: the phone number gives no country; set jurisdiction"
        )
    return region, "phone"


def covers(codes: list[str], jurisdiction: str) -> bool:
    """Whether a list of jurisdictions includes `jurisdiction`, itself or its whole country."""
    return jurisdiction in codes or country_of(jurisdiction) in codes


def choose_pack(
    jurisdiction: str,
    source: Source,
    policy: PolicySettings,
    packs: Mapping[str, RulePack],
) -> JurisdictionChoice:
    """The pack for a loan in `jurisdiction` under `policy`.

    The most specific coverage wins (a pack listing US-NY over one listing US). Where several
    packs cover it equally, the policy's own `rule_pack` is taken; it is no fallback: a policy's
    pack that does not cover the jurisdiction is never applied there.
    """
    if policy.jurisdictions and not covers(policy.jurisdictions, jurisdiction):
        raise JurisdictionError(
            f"policy {policy.name} applies to jurisdictions {', '.join(policy.jurisdictions)} "
            f"only, not {jurisdiction}; choose another policy or set jurisdiction"
        )
    level = jurisdiction
    candidates = sorted(n for n, p in packs.items() if jurisdiction in p.jurisdictions)
    if not candidates and level != country_of(jurisdiction):
        level = country_of(jurisdiction)
        candidates = sorted(n for n, p in packs.items() if level in p.jurisdictions)
    if not candidates:
        raise JurisdictionError(
            f"no contact rules for jurisdiction {jurisdiction}; add a rule pack or set jurisdiction"
        )
    if policy.rule_pack in candidates:
        pack, preference = policy.rule_pack, f"policy {policy.name}'s own pack"
    elif len(candidates) == 1:
        (pack,) = candidates
        preference = f"policy {policy.name}'s own pack {policy.rule_pack} does not"
    else:
        raise JurisdictionError(
            f"jurisdiction {level} is covered by rule packs {', '.join(candidates)}; "
            f"policy {policy.name} must name one of them as rule_pack"
        )
    narrower = f"no pack covers {jurisdiction}; " if level != jurisdiction else ""
    reason = f"{narrower}rule pack {pack} covers {level} ({preference})"
    return JurisdictionChoice(jurisdiction, source, pack, reason)


def explain_jurisdiction(
    loan: LoanInput, policy: PolicySettings, packs: Mapping[str, RulePack]
) -> JurisdictionChoice:
    """Which jurisdiction applies to `loan`, from where, and which pack and why."""
    jurisdiction, source = loan_jurisdiction(loan)
    return choose_pack(jurisdiction, source, policy, packs)
