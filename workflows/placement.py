"""Agency placement: a case handed to a collection agency, followed there, and taken back.

A placement is a state of the case (`CaseData.placement`): while it lasts the ladder is paused
(`paused_by`), the lender sends nothing and creates no tasks, and payments still apply (each adds
to what the placement recovered). It ends at its term (a durable timer in the run loop), on full
payment or settlement, on the lender's recall, on the agency's return, or when the case closes;
then the commission is the rate times the amount recovered while placed, rounded to the
currency's minor unit, half up, and the ladder resumes (or escalates, as the roster says).

The decisions here are pure functions of the case; `place`, `report_contact` and `write_all` run
the activities a placement needs (the roster, the caps check, the placement rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import (
        RECORD_CONTACT,
        RESERVE_CONTACT,
        ContactDecision,
        ContactRecord,
        ContactRequest,
    )
    from contracts.agency import (
        AGENCY_ROSTER,
        RECORD_PLACEMENT,
        Agency,
        AgencyContactInput,
        AgencyContactResult,
        AgencyRoster,
        PlacementRecord,
        PlacementView,
        RosterRequest,
    )
    from contracts.loan_rules import minor_units
    from contracts.messages import TaskOutcome
    from policies import compliance
    from workflows import addresses
    from workflows.case import Case
    from workflows.case_state import CaseData, PlacementState
    from workflows.effects import run_db

# Executions from before this patch treat the `agency_placement` step as a legal action and an
# e-mailed notice, the ladder carrying on. Since it, the step (or an operator's `place`) places
# the case with an agency from the roster: the ladder pauses until the placement ends.
PLACEMENT_PATCH = "agency-placement-state"
# The notices a placed case still sends: the one announcing the placement.
PLACEMENT_NOTICE = "agency_placement_notice"
NO_AGENCY_RULE = "case.no_agency"
PLACED_RULE = "case.placed_with_agency"
CONNECTED = {TaskOutcome.REACHED.value, TaskOutcome.PROMISED.value, TaskOutcome.VISITED.value}


def agency_actor(agency_id: str) -> str:
    return f"agency:{agency_id}"


# ------------------------------------------------------------------------------ pure decisions


def choose(roster: AgencyRoster, s: CaseData) -> tuple[Agency | None, str]:
    """The agency the roster's rule gives this case, and why (or None and why none)."""
    pack = s.policy.rule_pack.name
    eligible = [a for a in roster.agencies if pack in a.rule_packs]
    if not eligible:
        return None, f"no agency may work under rule pack {pack}"
    if roster.assignment == "balance_band":
        found = next((a for a in eligible if a.takes_balance(s.outstanding)), None)
        return found, f"balance band ({s.outstanding} {s.loan.currency})"
    if roster.assignment == "region":
        codes = {s.loan.timezone}
        if s.loan.jurisdiction:
            codes |= {s.loan.jurisdiction, s.loan.jurisdiction.split("-")[0]}
        else:
            codes |= set(s.policy.rule_pack.jurisdictions)
        found = next((a for a in eligible if codes & set(a.regions)), None)
        return found, "region"
    digest = hashlib.sha256(s.loan.loan_id.encode()).digest()
    return eligible[int.from_bytes(digest[:8], "big") % len(eligible)], "round robin"


def commission_of(recovered: Decimal, rate: Decimal, currency: str) -> Decimal:
    """The rate times the amount recovered, to the currency's minor unit, rounded half up."""
    return (recovered * rate).quantize(Decimal(1).scaleb(-minor_units(currency)),
                                       rounding=ROUND_HALF_UP)


def _record(s: CaseData, p: PlacementState) -> None:
    s.pending_placements.append(PlacementRecord(
        key=p.key, loan_id=s.loan.loan_id, agency_id=p.agency_id, currency=s.loan.currency,
        placed_at=p.placed_at, term_ends_at=p.ends_at, amount_at_placement=p.amount_at_placement,
        commission_rate=p.commission_rate, recovered=p.recovered,
        commission=commission_of(p.recovered, p.commission_rate, s.loan.currency),
        breaches=p.breaches, actor=p.actor, reason=p.reason, ended_at=p.ended_at,
        end_reason=p.end_reason))


def start(case: Case, agency: Agency, *, actor: str, reason: str, after: str,
          channels: list[str], term_days: int | None = None) -> PlacementState:
    """Place the case: the ladder pauses, the borrower is owed the placement notice."""
    s = case.s
    now = case.now()
    rate = agency.rate_for(s.stage, s.outstanding)
    days = term_days or agency.term_days
    p = PlacementState(
        key=f"{s.loan.loan_id}/placement/{len(s.placements) + 1}", agency_id=agency.id,
        agency_name=agency.name, placed_at=now, ends_at=now + timedelta(days=days),
        amount_at_placement=s.outstanding, commission_rate=rate, actor=actor, reason=reason,
        after=after)
    s.placement = p
    case.event("placed", f"placed with agency {agency.id} for {days} days "
               f"({s.outstanding} {s.loan.currency} outstanding, commission rate {rate}): "
               f"{reason}", actor=actor,
               detail={"agency_id": agency.id, "placement": p.key, "rate": str(rate),
                       "term_ends_at": p.ends_at.isoformat()})
    if channels:  # else the caller sends it (the ladder's placement step, under its rules)
        case.notify(PLACEMENT_NOTICE, channels, {"agency_name": agency.name})
    _record(s, p)
    case.wake = True
    return p


def credit(case: Case, amount: Decimal) -> None:
    """Money applied to the balance while placed counts as recovered by the placement."""
    p = case.s.placement
    if p is not None and amount > 0:
        p.recovered += amount
        _record(case.s, p)


def end(case: Case, reason: str, *, actor: str | None = None) -> PlacementState | None:
    """End the placement (if any): its commission, its row, and the ladder free again."""
    s = case.s
    p = s.placement
    if p is None:
        return None
    p.ended_at = case.now()
    p.end_reason = reason
    p.commission = commission_of(p.recovered, p.commission_rate, s.loan.currency)
    s.placement = None
    s.placements.append(p)
    days = (p.ended_at - p.placed_at).days
    case.event("placement_ended",
               f"placement with agency {p.agency_id} ended ({reason}) after {days} days: "
               f"{p.recovered} {s.loan.currency} recovered, commission {p.commission} "
               f"at {p.commission_rate}", actor=actor,
               detail={"agency_id": p.agency_id, "placement": p.key, "reason": reason,
                       "recovered": str(p.recovered), "commission": str(p.commission)})
    _record(s, p)
    if s.active and p.after == "escalate" and reason in ("term_expired", "recalled", "returned"):
        case.escalate(f"placement ended ({reason})")
    case.wake = True
    return p


def check_term(case: Case, now: datetime) -> datetime | None:
    """End a placement whose term is over; else when it will be (a wake time), or None."""
    p = case.s.placement
    if p is None:
        return None
    if now >= p.ends_at:
        end(case, "term_expired")
        return None
    return p.ends_at


def placed_with(s: CaseData, agency_id: str) -> PlacementState:
    """The placement, if it is this agency's; else a LookupError saying why not."""
    p = s.placement
    if p is None or p.agency_id != agency_id:
        raise LookupError(f"case {s.loan.loan_id} is not placed with agency {agency_id}")
    return p


def view(s: CaseData) -> PlacementView:
    history = [_row(s, p) for p in [*s.placements, *([s.placement] if s.placement else [])]]
    p = s.placement
    if p is None:
        return PlacementView(placed=False, history=history)
    return PlacementView(
        placed=True, agency_id=p.agency_id, placed_at=p.placed_at, term_ends_at=p.ends_at,
        amount_at_placement=p.amount_at_placement, recovered=p.recovered,
        commission_rate=p.commission_rate, breaches=p.breaches, history=history,
        borrower={"name": s.loan.borrower_name, "phone": s.loan.phone, "email": s.loan.email,
                  "locale": s.loan.locale, "timezone": s.loan.timezone,
                  # Issue 18: the contact details are in the vault; the service reads them.
                  **({"borrower_ref": s.loan.borrower_ref} if s.loan.borrower_ref else {})})


def _row(s: CaseData, p: PlacementState) -> PlacementRecord:
    return PlacementRecord(
        key=p.key, loan_id=s.loan.loan_id, agency_id=p.agency_id, currency=s.loan.currency,
        placed_at=p.placed_at, term_ends_at=p.ends_at, amount_at_placement=p.amount_at_placement,
        commission_rate=p.commission_rate, recovered=p.recovered,
        commission=commission_of(p.recovered, p.commission_rate, s.loan.currency),
        breaches=p.breaches, actor=p.actor, reason=p.reason, ended_at=p.ended_at,
        end_reason=p.end_reason)


# --------------------------------------------------------------------------------- activities


async def place(case: Case, *, actor: str, reason: str, agency_id: str = "",
                channels: list[str] | None = None) -> tuple[PlacementState | None, str]:
    """Place the case with the agency the roster gives it (or the one named); None and why if
    no agency takes it."""
    s = case.s
    roster: AgencyRoster = await run_db(AGENCY_ROSTER, RosterRequest(s.loan.loan_id),
                                        result_type=AgencyRoster)
    if agency_id:
        agency = roster.by_id(agency_id)
        why = f"chosen by {actor}"
        if agency is None:
            return None, f"no agency {agency_id!r} in the roster"
        if s.policy.rule_pack.name not in agency.rule_packs:
            return None, (f"agency {agency_id} may not work under rule pack "
                          f"{s.policy.rule_pack.name}")
    else:
        agency, why = choose(roster, s)
        if agency is None:
            case.event("placement_skipped", f"no agency takes the case: {why}",
                       rule=NO_AGENCY_RULE, actor=actor)
            return None, f"no agency takes the case: {why}"
    p = start(case, agency, actor=actor, reason=f"{reason}; {why}" if reason else why,
              after=roster.after_placement, term_days=roster.policy_terms.get(s.policy.name),
              channels=["email"] if channels is None else channels)
    return p, f"placed with agency {agency.id} until {p.ends_at:%Y-%m-%d}"


async def report_contact(case: Case, workflow_id: str, inp: AgencyContactInput,
                         ) -> AgencyContactResult:
    """A contact the agency made, checked like an agent's: inside the window and under the caps
    at the time it was made (lender and agency count together), or recorded as a breach."""
    s = case.s
    p = placed_with(s, inp.agency_id)
    pack, tz = s.policy.rule_pack, s.loan.timezone
    at = case.clock.policy_time(inp.at)
    local_at = compliance.local(at, tz)
    p.contacts += 1
    key = f"{workflow_id}/{p.key.split('/', 1)[1]}/contact-{p.contacts}"
    step_id = agency_actor(inp.agency_id)
    channel = inp.channel
    breach = compliance.window_check(at, tz, pack)
    reason = ""
    if breach is not None:
        reason = (f"{channel} at {local_at:%Y-%m-%d %H:%M} local, outside the "
                  f"{pack.window_start:%H:%M}-{pack.window_end:%H:%M} window")
    elif _capped(s, channel):
        decision: ContactDecision = await run_db(RESERVE_CONTACT, ContactRequest(
            key=key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=addresses.contact_key(s.loan, channel), channel=channel,
            step_id=step_id, stage=s.stage.value, template=None, at=at, timezone=tz,
            rule_pack=pack, check_only=True), result_type=ContactDecision)
        if not decision.allowed:
            breach = decision.rule or f"{pack.name}.caps"
            reason = f"{channel} at {local_at:%Y-%m-%d %H:%M} local over a cap: {decision.reason}"
    rule = breach or f"{pack.name}.window_and_caps"
    outcome = "connected" if inp.outcome.value in CONNECTED else "unanswered"
    await run_db(RECORD_CONTACT, ContactRecord(
        key=key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
        contact_key=addresses.contact_key(s.loan, channel), channel=channel, step_id=step_id,
        stage=s.stage.value, decision="breach" if breach else "sent", at=at, rule=rule,
        reason=reason or f"{channel} at {local_at:%Y-%m-%d %H:%M} local, within the "
                         f"{pack.name} window and caps",
        outcome=outcome, local_date=local_at.date()))
    actor = agency_actor(inp.agency_id)
    case.event("agency_contact", f"agency {inp.agency_id} {channel} outcome: "
               f"{inp.outcome.value}", actor=actor, rule=rule,
               detail={"channel": channel, "outcome": inp.outcome.value, "at": at.isoformat()})
    if breach is not None:
        p.breaches += 1
        s.breaches += 1
        case.event("compliance_breach", f"compliance breach ({breach}) by agency "
                   f"{inp.agency_id}: {reason}", rule=breach, actor=actor,
                   detail={"channel": channel, "at": at.isoformat(), "agency_id": inp.agency_id})
        _record(s, p)
        return AgencyContactResult(accepted=True, breach=True, rule=breach,
                                   message=f"recorded as a breach of {breach}: {reason}")
    if inp.outcome == TaskOutcome.WRONG_NUMBER:
        s.mark_unusable("phone", "wrong number reported by an agency")
    return AgencyContactResult(accepted=True, breach=False, rule=rule,
                               message=f"{channel} recorded within the {pack.name} rules")


def _capped(s: CaseData, channel: str) -> bool:
    pack = s.policy.rule_pack
    return any(channel in cap.channels for cap in pack.caps) or (
        channel == "call" and pack.post_conversation_quiet_days > 0)


async def write_all(case: Case, stopping: Callable[[], bool]) -> None:
    """Writes the placement rows in order, beside the recorder, until told to stop."""
    s = case.s
    while True:
        await case.runtime.wait_condition(lambda: bool(s.pending_placements) or stopping())
        if not s.pending_placements:
            return
        rec = s.pending_placements[0]
        if not s.simulate:
            await run_db(RECORD_PLACEMENT, rec)
        s.pending_placements.pop(0)
