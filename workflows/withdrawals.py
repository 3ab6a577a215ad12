"""Why a contact the case has set going (an agent's call or visit, a WeCom message awaiting its
staff member) is withdrawn now: one list of rules for both, pure."""

from __future__ import annotations

from workflows import placement
from workflows.case_state import CaseData

HOLD_RULE = "case.hold"


def withdrawal(s: CaseData) -> tuple[str, str] | None:
    """(rule, why) the contact is withdrawn now, short of the case closing (which each caller
    handles its own way), or None while it may go on."""
    if s.ceased:
        return f"{s.policy.rule_pack.name}.cease_communication", "borrower asked to cease contact"
    if s.hold is not None:
        return f"{HOLD_RULE}.{s.hold.kind}", f"{s.hold.kind} hold"
    if s.placement is not None:
        return placement.PLACED_RULE, f"placed with agency {s.placement.agency_id}"
    return None
