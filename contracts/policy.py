"""The collection policy a loan follows: segments, ladders of steps, rule packs.

Policies are data (TOML files in `policies/`, rule packs in `policies/rules/`), checked by
these models. A loan's workflow pins a `ResolvedPolicy` (its content, not a reference) when it
starts, so editing a file changes new loans only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.channels import CHANNELS, message_channels
from contracts.messages import Stage

# The error type a channel not in the table gives; its context has the channel and the known
# ones, and its message reads like pydantic's own for a literal.
UNKNOWN_CHANNEL = "unknown_channel"


def _in_table(known: Callable[[], list[str]]) -> Callable[[str], str]:
    # Looked up when a policy is checked, not when this module loads: a row a test registers
    # later is a channel like the shipped ones.
    def check(name: str) -> str:
        allowed = known()
        if name not in allowed:
            expected = " or ".join(repr(a) for a in allowed)
            raise PydanticCustomError(UNKNOWN_CHANNEL, "Input should be {expected}",
                                      {"expected": expected, "channel": name})
        return name

    return check


# Any channel of the table (caps count calls and visits too), and the ones a message goes out on.
Channel = Annotated[str, AfterValidator(_in_table(lambda: list(CHANNELS)))]
MessageChannel = Annotated[str, AfterValidator(_in_table(message_channels))]
StepKind = Literal["message", "call", "visit", "legal", "write_off"]
LegalAction = Literal["lawyer_letter", "filing", "agency_placement"]
Component = Literal["fees", "interest", "principal"]
# Notices a cease-communication request still allows (FDCPA 805(c)): that collection is ending,
# or that a named remedy may be or will be invoked.
AllowedNotice = Literal["collection_ending", "remedy_notice"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    id: str
    day: int = Field(description="Days relative to the due date (negative: before it).")
    hour: int = Field(10, ge=0, le=23, description="Local hour in the borrower's time zone.")
    stage: Stage
    kind: StepKind
    channels: list[MessageChannel] = []
    template: str | None = None
    tone: Literal["gentle", "firm", "formal", "legal"] = "gentle"
    action: LegalAction | None = None
    min_outstanding: Decimal | None = None
    max_outstanding: Decimal | None = None
    deadline_days: PositiveInt | None = None
    priority: int = Field(5, ge=1, le=10)
    notice: AllowedNotice | None = None


class Segment(_Strict):
    name: str
    ladder: str
    products: list[str] = ["*"]
    risk_grades: list[str] = ["*"]
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None


class CapRule(_Strict):
    """A contact cap and the scope it counts in (the regulations differ on scope)."""

    id: str
    source: str = ""
    channels: list[Channel]
    counts: Literal["attempts", "connected", "unanswered"]
    scope: Literal["borrower", "contact", "debt"]
    per_channel: bool = False
    limit: PositiveInt
    period_days: PositiveInt = 1


class RulePack(_Strict):
    name: str
    description: str = ""
    sources: list[str] = []
    window_start: time
    window_end: time
    window_rule: str
    # ISO 3166 codes the pack's rules are written for: countries ("US") or subdivisions ("US-NY").
    # Empty only in policies pinned before packs declared them; the loader requires it in files.
    jurisdictions: list[str] = []
    quiet_weekdays: list[int] = []  # 0 = Monday
    quiet_dates: list[str] = []  # ISO dates, local
    caps: list[CapRule] = []
    post_conversation_quiet_days: int = Field(0, ge=0)
    post_conversation_rule: str = ""
    opt_out_required: bool = False
    validation_notice: bool = False
    allowed_after_cease: list[AllowedNotice] = ["collection_ending", "remedy_notice"]
    # Channels the borrower must have consented to beforehand (TCPA: a prerecorded call needs
    # prior express consent, the loan's `prerecorded_call_consent`); without it the step falls
    # back, recorded under `prior_consent_rule`.
    prior_consent_channels: list[Channel] = []
    prior_consent_rule: str = ""

    @field_validator("quiet_weekdays")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in v):
            raise ValueError("weekdays run from 0 (Monday) to 6 (Sunday)")
        if len(set(v)) == 7:
            raise ValueError("every weekday is quiet: contact would never be allowed")
        return v

    @field_validator("quiet_dates")
    @classmethod
    def _dates(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an ISO date (YYYY-MM-DD)") from None
        return v

    @model_validator(mode="after")
    def _window(self) -> RulePack:
        # compliance.py compares local wall times against these: they must be naive and ordered
        # (a window across midnight is not supported; no rule we model needs one).
        if self.window_start.tzinfo is not None or self.window_end.tzinfo is not None:
            raise ValueError("window_start and window_end are local wall times: no UTC offset")
        if self.window_start >= self.window_end:
            raise ValueError(
                f"window_start ({self.window_start}) must be before window_end ({self.window_end})"
            )
        if self.prior_consent_channels and not self.prior_consent_rule:
            raise ValueError("prior_consent_channels needs a prior_consent_rule id")
        if self.post_conversation_quiet_days and not self.post_conversation_rule:
            raise ValueError("post_conversation_quiet_days needs a post_conversation_rule id")
        return self


DEFAULT_RETENTION_YEARS = 5
MAX_RETENTION_YEARS = 30


class PolicySettings(_Strict):
    """Everything in a policy but its segments and ladders."""

    name: str
    version: str
    description: str = ""
    # The pack preferred where several cover a loan's jurisdiction equally; a loan it does not cover
    # gets its own jurisdiction's pack (policies/jurisdiction.py), never this one.
    rule_pack: str
    # Loans this policy may take, by ISO 3166 code; a loan elsewhere is refused. Empty: any.
    jurisdictions: list[str] = []
    # Length of one policy day in real seconds: 86400 in production, a few seconds in the demo.
    day_seconds: PositiveInt = 86400
    payment_order: list[Component] = ["fees", "interest", "principal"]
    promise_max_days: PositiveInt = 14
    promise_grace_days: int = Field(2, ge=0)
    broken_promises_to_escalate: PositiveInt = 2
    installment_grace_days: int = Field(3, ge=0)
    installment_reminder_days: int = Field(2, ge=0)
    max_installments: PositiveInt = 12
    max_extension_days: PositiveInt = 60
    min_settlement_ratio: Decimal = Field(Decimal("0.5"), gt=0, le=1)
    hold_review_days: PositiveInt = 30
    call_deadline_days: PositiveInt = 1
    visit_deadline_days: PositiveInt = 7
    # How long the lender's staff member has to confirm a WeCom message (a message step's own
    # `deadline_days` overrides it); unconfirmed by then, it counts as not sent and falls back.
    wecom_confirm_hours: PositiveInt = 4
    @field_validator("payment_order")
    @classmethod
    def _all_components(cls, v: list[str]) -> list[str]:
        # Leaving a component out would count money still owed as excess.
        if sorted(v) != sorted(["fees", "interest", "principal"]):
            raise ValueError("payment_order must name fees, interest and principal, each once")
        return v

    # How long one provider send may take before Temporal retries it (the outbox keeps the retry
    # from sending twice).
    send_timeout_seconds: PositiveInt = 60
    # Continue as new before the history grows large (the server also suggests it).
    max_history_events: PositiveInt = 5000
    # How long a case's personal data is kept after the case ends (issue 18), as the lender's
    # legal obligations set it; then the daily retention purge erases it (a legal hold waits).
    retention_years: int = Field(DEFAULT_RETENTION_YEARS, ge=1, le=MAX_RETENTION_YEARS)


class Challenger(_Strict):
    """A policy run on a share of the champion's new loans (policies/experiments.py)."""

    policy: str  # the challenger policy's name
    share: float  # of the champion's new loans, in (0, 1); checked by the loader


class PolicyFile(PolicySettings):
    segments: list[Segment]
    ladders: dict[str, list[Step]]
    # Champion/challenger: this policy is the champion; each challenger takes its share of the new
    # loans that would follow it, chosen by a hash of the loan id and `experiment` (the name keys
    # the assignment: a new name draws new arms). Not part of what a case pins.
    experiment: str = ""
    challengers: list[Challenger] = []


class ResolvedPolicy(_Strict):
    """What a workflow pins: one ladder, the settings and the rule pack, by content."""

    settings: PolicySettings
    segment: str
    ladder_name: str
    steps: list[Step]
    rule_pack: RulePack
    source_sha256: str
    # The experiment the loan was assigned in and its arm ("champion", or the challenger's policy
    # name, whose settings and ladder are the ones above); None outside any experiment, and in
    # cases pinned before experiments existed.
    experiment: str | None = None
    arm: str | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def version(self) -> str:
        return self.settings.version

    @property
    def experiment_arm(self) -> str | None:
        """`experiment:arm`, as the ExperimentArm search attribute and `list --arm` write it (a
        bare experiment name then finds all its arms); None outside any experiment."""
        if self.experiment is None or self.arm is None:
            return None
        return f"{self.experiment}:{self.arm}"


def _matches(value: str, allowed: list[str]) -> bool:
    return "*" in allowed or value in allowed


def select_segment(policy: PolicyFile, product: str, risk_grade: str, amount: Decimal) -> Segment:
    """The first segment whose product, risk grade and amount bounds all match."""
    for segment in policy.segments:
        if not _matches(product, segment.products) or not _matches(risk_grade, segment.risk_grades):
            continue
        if segment.min_amount is not None and amount < segment.min_amount:
            continue
        if segment.max_amount is not None and amount >= segment.max_amount:
            continue
        return segment
    raise LookupError(
        f"policy {policy.name}: no segment matches product={product!r} risk_grade={risk_grade!r} "
        f"amount={amount}"
    )
