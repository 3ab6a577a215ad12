"""Collection agencies and placements: the roster (policies/agencies.toml) and what crosses the
wire when a case is placed with an agency, reported on by it, and taken back.

An agency is configuration: its id, its commission (a decimal rate, by stage or balance band), the
term a placement lasts, the rule packs it may work under, and (for the API) the name its `agency`
key carries. Which agency a case goes to is the roster's `assignment` rule. Money is `Decimal` in
the loan's currency; the commission is the rate times the amount recovered while placed, rounded
to the currency's minor unit, half up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from contracts.messages import Stage, TaskOutcome

AGENCY_ROSTER = "agency_roster"
RECORD_PLACEMENT = "record_placement"

Assignment = Literal["balance_band", "region", "round_robin"]
# Why a placement ended.
END_REASONS = ("term_expired", "paid_in_full", "settled", "recalled", "returned", "case_closed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommissionRate(_Strict):
    """One rate, for the cases in a stage and/or a balance band (min inclusive, max exclusive)."""

    rate: Decimal = Field(ge=0, le=1)
    stage: Stage | None = None
    min_outstanding: Decimal | None = None
    max_outstanding: Decimal | None = None


class Agency(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str
    # The first rate that matches the case when placed; the last should match anything.
    commission: list[CommissionRate] = Field(min_length=1)
    term_days: PositiveInt = 90
    rule_packs: list[str] = Field(min_length=1)
    # For `balance_band`: the balances it takes (min inclusive, max exclusive).
    min_outstanding: Decimal | None = None
    max_outstanding: Decimal | None = None
    # For `region`: ISO 3166 codes ("CN", "US-NY") or IANA time zones it covers.
    regions: list[str] = []
    # The API key's name (role `agency`) that acts for this agency; the id if empty.
    api_key_name: str = ""

    def rate_for(self, stage: Stage, outstanding: Decimal) -> Decimal:
        for c in self.commission:
            if c.stage is not None and c.stage != stage:
                continue
            if c.min_outstanding is not None and outstanding < c.min_outstanding:
                continue
            if c.max_outstanding is not None and outstanding >= c.max_outstanding:
                continue
            return c.rate
        return self.commission[-1].rate

    def takes_balance(self, outstanding: Decimal) -> bool:
        if self.min_outstanding is not None and outstanding < self.min_outstanding:
            return False
        return self.max_outstanding is None or outstanding < self.max_outstanding


class AgencyRoster(_Strict):
    assignment: Assignment = "round_robin"
    # When a placement ends without the case being paid: `resume` the ladder where it paused
    # (steps that came due meanwhile are passed over as superseded, the latest runs), or
    # `escalate` to the first step of the next stage.
    after_placement: Literal["resume", "escalate"] = "resume"
    agencies: list[Agency] = []
    # Placement terms (policy days) for the cases of these policies, overriding the agencies'
    # own: the demo's compressed clock places a case for days, not months.
    policy_terms: dict[str, PositiveInt] = {}

    @model_validator(mode="after")
    def _unique(self) -> AgencyRoster:
        ids = [a.id for a in self.agencies]
        if len(ids) != len(set(ids)):
            raise ValueError("agency ids must be unique")
        return self

    def by_id(self, agency_id: str) -> Agency | None:
        return next((a for a in self.agencies if a.id == agency_id), None)


@dataclass
class RosterRequest:
    """Asked of the `agency_roster` activity when a case is placed."""

    loan_id: str


@dataclass
class PlacementRecord:
    """One placement row (keyed: written again as it changes, never twice)."""

    key: str
    loan_id: str
    agency_id: str
    currency: str
    placed_at: datetime
    term_ends_at: datetime
    amount_at_placement: Decimal
    commission_rate: Decimal
    recovered: Decimal
    commission: Decimal
    breaches: int
    actor: str
    reason: str
    ended_at: datetime | None = None
    end_reason: str | None = None


# ------------------------------------------------------------------- updates and their answers


@dataclass
class PlaceInput:
    """An operator places the case; `agency_id` empty: the roster's assignment rule chooses."""

    actor: str
    agency_id: str = ""
    reason: str = ""


@dataclass
class RecallInput:
    """The lender takes a placed case back."""

    actor: str
    reason: str = ""


@dataclass
class AgencyReturnInput:
    """The agency hands a case back."""

    agency_id: str
    reason: str = ""


AgencyChannel = Literal["call", "visit", "sms", "email"]


@dataclass
class AgencyContactInput:
    """A contact the agency made, reported after the fact; checked against the case's rule pack
    at `at` (the window and the caps, lender and agency together), a breach recorded as one."""

    agency_id: str
    channel: AgencyChannel
    outcome: TaskOutcome
    at: datetime
    note: str = ""


@dataclass
class AgencyPromiseInput:
    agency_id: str
    amount: Decimal
    currency: str
    promised_date: date


@dataclass
class AgencyContactResult:
    accepted: bool
    breach: bool
    rule: str
    message: str


@dataclass
class PlacementView:
    """What the `placement` query answers (the placed agency's view, or none)."""

    placed: bool
    agency_id: str | None = None
    placed_at: datetime | None = None
    term_ends_at: datetime | None = None
    amount_at_placement: Decimal | None = None
    recovered: Decimal | None = None
    commission_rate: Decimal | None = None
    breaches: int = 0
    # What the agency needs to reach the borrower (name, phone, email, locale, timezone), only
    # while placed; the service gives it to the placed agency alone.
    borrower: dict[str, str] | None = None
    # Every placement of the case so far, oldest first, ended ones with reason and commission.
    history: list[PlacementRecord] | None = None
