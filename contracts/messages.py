"""What crosses the wire: workflow input, signals, updates, queries and results.

Plain dataclasses, so a loan system in Java or Go can send them as JSON objects. Money is a
`Decimal` (sent as a JSON string such as "1250.00") beside its ISO 4217 currency; dates are ISO
strings. The data converter is pydantic's, which validates these types on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class CaseState(StrEnum):
    ACTIVE = "active"
    PAID = "paid"
    SETTLED = "settled"
    WRITTEN_OFF = "written_off"
    CLOSED = "closed"  # bankruptcy, deceased, sold, ... : no more outbound contact
    # Never opened: its start input broke the loan-file rules (search attribute only; the
    # workflow failed with the field named).
    FAILED = "failed"


class Stage(StrEnum):
    PRE_DUE = "pre_due"
    EARLY = "early"
    MIDDLE = "middle"
    LATE = "late"
    LEGAL = "legal"
    WRITTEN_OFF = "written_off"
    CLOSED = "closed"


# The order a case moves through; `closed` is an end outside it. Escalation only moves forward.
STAGE_ORDER = (Stage.PRE_DUE, Stage.EARLY, Stage.MIDDLE, Stage.LATE, Stage.LEGAL, Stage.WRITTEN_OFF)


# Why a case may be closed for good, and the holds an operator may place (a dispute is its own
# verb): one list each, which the workflow enforces and the CLI and API offer.
CLOSE_REASONS = ("bankruptcy", "deceased", "sold", "fraud", "other")
HOLD_KINDS = ("dispute", "hardship", "manual")


class TaskOutcome(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    REFUSED = "refused"
    PROMISED = "promised"
    VISITED = "visited"
    NOT_FOUND = "borrower_not_found"
    DEADLINE_MISSED = "deadline_missed"


@dataclass
class LoanInput:
    """An overdue loan as the loan system hands it over."""

    loan_id: str
    borrower_name: str
    phone: str  # E.164
    email: str
    locale: str  # "en" or "zh-CN"
    timezone: str  # IANA name, the borrower's own
    currency: str  # ISO 4217
    amount_overdue: Decimal
    due_date: date
    product: str = "consumer"
    risk_grade: str = "B"
    lender: str = "Demo Lender"
    # Lets borrower-scoped contact caps span the borrower's loans; derived from the phone if absent.
    borrower_id: str | None = None
    # Components of amount_overdue; principal is what is left after interest and fees.
    interest: Decimal = Decimal("0")
    fees: Decimal = Decimal("0")
    # Ask for a named policy instead of the one the segments select.
    policy: str | None = None
    # ISO 3166 country or subdivision ("US", "US-NY") whose contact rules apply; empty: the phone
    # number's country. Defaulted so inputs recorded before it existed still decode.
    jurisdiction: str = ""
    # Channels the case may not use from the start, with why: {"sms": "a fixed-line number..."}
    # for a landline or toll-free phone (it may be called, not texted). Defaulted, as above.
    unusable_channels: dict[str, str] = field(default_factory=dict)
    # The borrower's WeCom external-contact id with the lender (`wm...`); empty: not a contact, and
    # the WeCom channel is unusable for the case. Defaulted, as above.
    wecom_external_userid: str = ""
    # Prior express consent to prerecorded (automated voice) calls, where the rule pack asks for it
    # (the `us` pack, TCPA). Defaulted: no consent.
    prerecorded_call_consent: bool = False
    # Issue 18: the borrower's entry in the vault (PostgreSQL, encrypted), set when the case is
    # started through the service; the PERSONAL_FIELDS are then blank here and the activities read
    # them at send time. Empty: an input of the old shape, the personal fields inline.
    borrower_ref: str = ""
    # With a borrower_ref, the key each channel's caps count under (`p:<hash>`, ...), computed at
    # start from the addresses the input no longer holds; a channel without an address has none.
    contact_keys: dict[str, str] = field(default_factory=dict)


# The loan fields that identify or reach the borrower: kept in the vault, never in the workflow.
PERSONAL_FIELDS = ("borrower_name", "phone", "email", "wecom_external_userid")


@dataclass
class PaymentInput:
    payment_id: str
    amount: Decimal
    currency: str
    paid_at: datetime | None = None
    source: str = "loan-system"


@dataclass
class PromiseInput:
    agent: str
    amount: Decimal
    currency: str
    promised_date: date


@dataclass
class Installment:
    amount: Decimal
    due_date: date


@dataclass
class PlanInput:
    agent: str
    currency: str
    installments: list[Installment]


@dataclass
class ExtensionInput:
    agent: str
    new_due_date: date
    reason: str = ""


@dataclass
class WaiverInput:
    agent: str
    component: str  # "interest" or "fees"
    amount: Decimal
    currency: str
    reason: str = ""


@dataclass
class SettlementInput:
    agent: str
    amount: Decimal
    currency: str
    pay_by: date


@dataclass
class HoldInput:
    actor: str
    kind: str  # "dispute", "hardship" or "manual"
    reason: str = ""
    review_by: date | None = None


@dataclass
class ResolveHoldInput:
    actor: str
    resolution: str = "resolved"
    reason: str = ""


@dataclass
class CeaseInput:
    actor: str
    reason: str = "borrower request"


@dataclass
class CloseInput:
    actor: str
    reason: str  # "bankruptcy", "deceased", "sold", ...


@dataclass
class TaskOutcomeInput:
    task_key: str
    outcome: TaskOutcome
    agent: str = ""
    note: str = ""
    # When the call or visit happened (timezone-aware); None: when the outcome is reported. The
    # contact is recorded at this time, and checked against the window and caps then.
    at: datetime | None = None


@dataclass
class UpdateResult:
    accepted: bool
    message: str
    outstanding: Decimal
    currency: str


class PaymentStatus(StrEnum):
    APPLIED = "applied"  # to the balance (or kept as excess after the case closed)
    DUPLICATE = "duplicate"  # this payment id was reported before: nothing changed
    UNAPPLIED = "unapplied"  # money received that cannot be applied: recorded with the reason


@dataclass
class PaymentResult:
    """The answer to the `pay` update: what became of the money reported."""

    payment_id: str
    status: PaymentStatus
    message: str
    outstanding: Decimal
    currency: str
    reason: str = ""  # why it was not applied (unapplied), else empty


@dataclass
class TimelineEvent:
    at: datetime
    kind: str
    summary: str
    rule: str | None = None
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseStatus:
    loan_id: str
    state: CaseState
    stage: Stage
    days_past_due: int
    outstanding: Decimal
    currency: str
    principal: Decimal
    interest: Decimal
    fees: Decimal
    paid_total: Decimal
    next_action: str | None
    next_action_at: datetime | None
    promise: dict[str, Any] | None
    plan: dict[str, Any] | None
    settlement: dict[str, Any] | None
    hold: dict[str, Any] | None
    contact_counts: dict[str, int]
    policy_name: str
    policy_version: str
    segment: str
    rule_pack: str
    ceased: bool
    assigned_agent: str | None
    run_count: int
    # Agent calls or visits reported outside the rule pack's window or over a cap.
    breaches: int = 0
    # Payments reported as received that could not be applied (wrong currency, not positive).
    unapplied_payments: int = 0
    # The agency the case is placed with (issue 19), or None.
    placed_with: str | None = None


@dataclass
class CaseResult:
    loan_id: str
    state: CaseState
    stage: Stage
    outstanding: Decimal
    currency: str
    paid_total: Decimal
    excess: Decimal
    close_reason: str
    # Only a simulation returns its timeline: a real case's is queried and written to PostgreSQL.
    timeline: list[TimelineEvent] | None = None


@dataclass
class DeliveryReport:
    """The `delivery_failed` signal: a provider could not deliver a message the case sent.

    `outbox_key` is the message's (`<workflow id>/<step or notice key>/<channel>`, the contact
    row's key too); `address_unusable` says the address itself is no good on this channel (a
    landline, an unknown handset, a hard bounce) rather than this one message (30003, a soft
    bounce). No address travels: the case knows its own."""

    loan_id: str
    outbox_key: str
    step_id: str
    channel: str
    status: str  # "undelivered", "failed", "bounce", "dropped"
    error_code: str
    address_unusable: bool
    at: datetime
