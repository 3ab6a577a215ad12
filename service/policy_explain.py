"""Which policy, ladder and rule pack a loan would get, and its next contacts in local time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from activities.policies import resolve
from contracts.messages import LoanInput
from policies import compliance
from policies import loader as policy_loader
from service.errors import BadInput
from service.values import parse_date, parse_instant


@dataclass(frozen=True)
class PlannedContact:
    step_id: str
    stage: str
    kind: str
    channels: list[str]
    template: str | None
    planned: datetime  # UTC: the ladder's day and hour, in the borrower's zone
    at: datetime  # UTC: when the rule pack first allows it
    local: datetime  # `at` in the borrower's zone
    deferred_by: str | None  # the rule that moved it, if any
    condition: str | None  # balance bounds, if the step has any


@dataclass(frozen=True)
class Explanation:
    loan_id: str
    policy_name: str
    policy_version: str
    segment: str
    ladder: str
    rule_pack: str
    rule_pack_description: str
    window: tuple[time, time]
    timezone: str
    contacts: list[PlannedContact] = field(default_factory=list)
    past_steps: int = 0  # steps whose time has passed (a case opened now runs the latest of them)


def as_of_moment(value: str, timezone: str, field: str = "as_of") -> datetime:
    """When `explain` looks from, or a simulation starts: an ISO instant with its offset, or a
    date YYYY-MM-DD, meaning its first moment in the borrower's zone `timezone`."""
    if "T" in value or " " in value.strip():
        return parse_instant(value, field)
    day = parse_date(value, field)
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))


def explain(loan: LoanInput, *, now: datetime, count: int = 8) -> Explanation:
    """The policy a case for `loan` would pin and its next `count` contacts, as of `now`.

    Times pass through the rule pack's contact window and quiet days, as the workflow applies
    them; contact caps depend on contacts not yet made and are not shown.
    """
    try:
        policy = resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        raise BadInput("policy", str(err).splitlines()[0]) from None
    pack, tz = policy.rule_pack, loan.timezone
    contacts: list[PlannedContact] = []
    past = 0
    for step in policy.steps:
        planned = compliance.step_instant(loan.due_date, step.day, step.hour, tz)
        if planned < now:
            past += 1
            continue
        if len(contacts) >= count:
            continue
        at, rule = compliance.next_allowed(planned, tz, pack)
        bounds = []
        if step.min_outstanding is not None:
            bounds.append(f"balance >= {step.min_outstanding}")
        if step.max_outstanding is not None:
            bounds.append(f"balance < {step.max_outstanding}")
        contacts.append(PlannedContact(
            step_id=step.id, stage=step.stage.value, kind=step.kind, channels=list(step.channels),
            template=step.template, planned=planned, at=at, local=compliance.local(at, tz),
            deferred_by=rule, condition=" and ".join(bounds) or None,
        ))
    return Explanation(
        loan_id=loan.loan_id, policy_name=policy.name, policy_version=policy.version,
        segment=policy.segment, ladder=policy.ladder_name, rule_pack=pack.name,
        rule_pack_description=pack.description, window=(pack.window_start, pack.window_end),
        timezone=tz, contacts=contacts, past_steps=past,
    )
