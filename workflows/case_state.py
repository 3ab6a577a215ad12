"""The one state a case carries, across handlers and through continue-as-new."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from datetime import date, datetime
from decimal import Decimal

from contracts.activity_io import EventRecord, PaymentRecord, StageChange, UnappliedPayment
from contracts.agency import PlacementRecord
from contracts.behaviour import BehaviourModel, BorrowerAction
from contracts.channels import CHANNELS
from contracts.messages import CaseState, Installment, LoanInput, Stage, TimelineEvent
from contracts.policy import ResolvedPolicy
from workflows.ledger import Balance


@dataclass
class SimulatedAttempt:
    """A contact attempt a simulated case counts against its caps (workflows/simulation.py)."""

    key: str
    at: datetime
    channel: str
    contact_key: str
    outcome: str  # as the caps count it: "pending", "sent", "connected", "unanswered" or "failed"


@dataclass
class PromiseState:
    agent: str
    amount: Decimal
    promised_date: date
    made_at: datetime
    paid_before: Decimal  # paid_total when it was made: what is paid after counts towards it
    status: str = "open"  # open, kept, broken, cancelled


@dataclass
class PlanState:
    agent: str
    installments: list[Installment]
    made_at: datetime
    paid_before: Decimal
    next_index: int = 0  # first installment not yet covered
    reminded: list[int] = field(default_factory=list)
    status: str = "active"  # active, completed, broken


@dataclass
class SettlementState:
    agent: str
    amount: Decimal
    pay_by: date
    made_at: datetime
    paid_before: Decimal
    status: str = "open"  # open, settled, broken


@dataclass
class HoldState:
    kind: str
    actor: str
    reason: str
    since: datetime
    review_by: date


@dataclass
class OpenTask:
    task_key: str
    kind: str
    step_id: str
    contact_key: str
    due_by: datetime
    outcome: str | None = None
    agent: str | None = None
    note: str | None = None
    # From TASK_RULES_PATCH (workflows/agent_tasks.py): when it was created, when the reported call
    # happened (policy time), and whether a hold withdraws it.
    created_at: datetime | None = None
    at: datetime | None = None
    withdraws_on_hold: bool = False


@dataclass
class PlacementState:
    """The case's placement with a collection agency (workflows/placement.py)."""

    key: str
    agency_id: str
    agency_name: str
    placed_at: datetime
    ends_at: datetime
    amount_at_placement: Decimal
    commission_rate: Decimal
    actor: str
    reason: str
    after: str = "resume"  # the roster's `after_placement` when it was placed
    recovered: Decimal = Decimal("0")
    breaches: int = 0
    contacts: int = 0
    ended_at: datetime | None = None
    end_reason: str | None = None
    commission: Decimal = Decimal("0")


@dataclass
class Notice:
    """A message the case owes the borrower outside the ladder (receipts, confirmations)."""

    key: str
    template: str
    channels: list[str]
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class SentMessage:
    """A message of the case a provider accepted: what a delivery report about it refers to."""

    step_id: str  # "" for a notice outside the ladder
    channel: str
    template: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class CaseData:
    loan: LoanInput
    policy: ResolvedPolicy
    clock_origin: datetime
    opened_at: datetime
    due_date: date
    principal: Decimal
    interest: Decimal
    fees: Decimal
    borrower_key: str
    state: CaseState = CaseState.ACTIVE
    stage: Stage = Stage.PRE_DUE
    paid_total: Decimal = Decimal("0")
    excess: Decimal = Decimal("0")
    payment_ids: list[str] = field(default_factory=list)
    done_steps: list[str] = field(default_factory=list)
    pull_forward: list[str] = field(default_factory=list)
    promise: PromiseState | None = None
    broken_promises: int = 0
    plan: PlanState | None = None
    settlement: SettlementState | None = None
    hold: HoldState | None = None
    ceased: bool = False
    # Channels the case may no longer use, with why (a refused address, a wrong number).
    unusable: dict[str, str] = field(default_factory=dict)
    validation_notice_sent: bool = False
    close_reason: str = ""
    closed_at: datetime | None = None
    assigned_agent: str | None = None
    contact_counts: dict[str, int] = field(default_factory=dict)
    timeline: list[TimelineEvent] = field(default_factory=list)
    seq: int = 0
    run_count: int = 1
    open_task: OpenTask | None = None
    # Tasks withdrawn before an outcome (a hold, a cease, the case's end): task key -> why.
    withdrawn_tasks: dict[str, str] = field(default_factory=dict)
    # Agent calls or visits reported outside the window or over a cap.
    breaches: int = 0
    # Payments reported as received that could not be applied: payment id -> why.
    unapplied: dict[str, str] = field(default_factory=dict)
    # Written to PostgreSQL by the recorder; carried across continue-as-new until written.
    pending_events: list[EventRecord] = field(default_factory=list)
    pending_payments: list[PaymentRecord] = field(default_factory=list)
    pending_stage_changes: list[StageChange] = field(default_factory=list)
    pending_notices: list[Notice] = field(default_factory=list)
    pending_unapplied: list[UnappliedPayment] = field(default_factory=list)
    snapshot_dirty: bool = True
    # With an agency now (the ladder paused), and every placement so far, ended ones included.
    placement: PlacementState | None = None
    placements: list[PlacementState] = field(default_factory=list)
    pending_placements: list[PlacementRecord] = field(default_factory=list)
    # The messages providers accepted (outbox key -> what it was), so that a `delivery_failed`
    # report names one of this case's sends, and the outbox keys of those whose failure asks
    # for the step's fallback, sent by the run loop (workflows/contacts.py DELIVERY_FAILED_PATCH).
    sent_messages: dict[str, SentMessage] = field(default_factory=dict)
    pending_fallbacks: list[str] = field(default_factory=list)
    # A simulation (workflows/simulation.py) keeps its contact attempts here instead of PostgreSQL.
    simulate: bool = False
    simulated_attempts: list[SimulatedAttempt] = field(default_factory=list)
    # Played against a borrower-behaviour model (workflows/behaviour.py): the model, the seed of
    # its draws and the borrower's actions still to come, in time order.
    behaviour: BehaviourModel | None = None
    seed: int = 0
    pending_actions: list[BorrowerAction] = field(default_factory=list)
    instant: datetime | None = None  # its policy time (workflows/case.py `now`)
    # State carried over from runs before `unusable` held per-channel flags; read, never written.
    phone_ok: InitVar[bool] = True
    email_ok: InitVar[bool] = True

    def __post_init__(self, phone_ok: bool, email_ok: bool) -> None:
        for address, ok in (("phone", phone_ok), ("email", email_ok)):
            if not ok:
                self.mark_unusable(address, "marked unusable by an earlier run")

    def mark_unusable(self, address_field: str, reason: str) -> None:
        """Every channel sending to this loan field stops (a refused number ends SMS and calls)."""
        for spec in CHANNELS.values():
            if spec.address_field == address_field:
                self.unusable.setdefault(spec.name, reason)

    @property
    def balance(self) -> Balance:
        return Balance(principal=self.principal, interest=self.interest, fees=self.fees)

    def set_balance(self, balance: Balance) -> None:
        self.principal, self.interest, self.fees = balance.principal, balance.interest, balance.fees

    @property
    def outstanding(self) -> Decimal:
        return self.principal + self.interest + self.fees

    @property
    def active(self) -> bool:
        return self.state == CaseState.ACTIVE

    @property
    def paused_by(self) -> str | None:
        """What holds the ladder back, if anything."""
        if self.placement is not None:
            return f"placed with agency {self.placement.agency_id}"
        if self.hold is not None:
            return f"{self.hold.kind} hold"
        if self.promise is not None and self.promise.status == "open":
            return "open promise to pay"
        if self.plan is not None and self.plan.status == "active":
            return "active installment plan"
        if self.settlement is not None and self.settlement.status == "open":
            return "open settlement offer"
        return None
