"""Where each channel reaches the borrower, read from the channel table: the address, the key the
contact caps count it under, and whether the case may still use it. Pure."""

from __future__ import annotations

import hashlib

from contracts.channels import channel
from contracts.messages import LoanInput
from workflows.case_state import CaseData


def hashed(text: str) -> str:
    """A stable key for an address that does not reveal it (caps and records never hold one)."""
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:24]


def contact_key(loan: LoanInput, name: str) -> str:
    # A vault-shaped input (issue 18) carries the keys computed at start: its addresses are blank.
    if name in loan.contact_keys:
        return loan.contact_keys[name]
    spec = channel(name)
    return f"{spec.contact_prefix}:{hashed(str(getattr(loan, spec.key_field)))}"


def address(loan: LoanInput, name: str) -> str:
    return str(getattr(loan, channel(name).address_field))


def has_address(loan: LoanInput, name: str) -> bool:
    """Whether the loan has an address on this channel; a vault-shaped input says so by the
    channel's contact key, computed at start while the address was at hand."""
    if loan.borrower_ref:
        return name in loan.contact_keys
    return bool(address(loan, name).strip())


def borrower_key(loan: LoanInput) -> str:
    """Borrower-wide caps count under the loan system's borrower id, else the phone number's key."""
    return loan.borrower_id or contact_key(loan, "sms")


def unusable_reason(s: CaseData, name: str) -> str | None:
    """Why the case may not use this channel, or None if it may."""
    spec = channel(name)
    if spec.optional_address and not has_address(s.loan, name):
        # An optional loan column left empty (no WeCom external contact): the row says why.
        return spec.missing_reason or f"no {spec.address_label} on the loan"
    if name not in s.unusable:
        return None
    return f"no valid {spec.address_label}"


def consent_missing(s: CaseData, name: str) -> str | None:
    """The rule a contact on this channel would break for want of the borrower's prior consent
    (the `us` pack's prerecorded calls), or None."""
    pack = s.policy.rule_pack
    if name in pack.prior_consent_channels and not s.loan.prerecorded_call_consent:
        return pack.prior_consent_rule or f"{pack.name}.prior_consent"
    return None


def fallback(name: str) -> str | None:
    return channel(name).fallback
