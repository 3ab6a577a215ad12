"""What the reconciler reads, as small frozen dataclasses: the soak's own reports (its run log),
the provider's messages, PostgreSQL's rows and Temporal's workflows; and the constants the checks
share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

DAY = 86400
CENT = Decimal("0.01")
WORKFLOW_PREFIX = "collection-"  # the case workflow's id: collection-<loan_id>
END_STATES = frozenset({"paid", "settled", "written_off", "closed", "failed"})
MESSAGE_CHANNELS = frozenset({"sms", "email"})  # the channels the emulator's log shows
MADE = frozenset({"sent", "breach"})  # contact decisions that are contacts made
# What each kind of cap counts, by the contact row's outcome (a message is an attempt nobody
# answered; a call is connected or unanswered once its outcome is in).
COUNTS: dict[str, frozenset[str]] = {
    "attempts": frozenset({"sent", "pending", "connected", "unanswered"}),
    "connected": frozenset({"connected"}),
    "unanswered": frozenset({"sent", "pending", "unanswered"}),
}
PHONE_CHANNELS = frozenset({"call", "voice"})
# Answers that refuse a payment outright: the loan system knows it was not taken.
REFUSALS = frozenset({"closed", "not_found", "bad_input"})
VALIDATION_NOTICE = "validation-notice"  # one channel as the caps count them
# The outbox's error for a send not made: the window had closed by the time it would have gone.
OUTSIDE_WINDOW = "outside_window"
# How the service's reason for a payment to a case whose workflow had ended begins.
CLOSED_CASE_REASON = "case closed"


@dataclass(frozen=True)
class Loan:
    """A loan as the soak opened it (the run log)."""

    loan_id: str
    timezone: str
    currency: str
    amount: Decimal
    started: bool = True  # the API answered "started" (or already running)


@dataclass(frozen=True)
class ReportedPayment:
    """One report of a payment to the API, and what the API answered (None: no answer)."""

    loan_id: str
    payment_id: str
    amount: Decimal
    currency: str
    answer: str | None  # applied, duplicate, unapplied, closed, or None


@dataclass(frozen=True)
class ReportedOutcome:
    task_key: str
    loan_id: str
    outcome: str
    accepted: bool


@dataclass(frozen=True)
class ProviderMessage:
    channel: str
    ident: str
    to: str
    body: str
    outbox_key: str | None  # SendGrid's custom arg; None for SMS
    received_at: datetime
    reply: bool = False  # a TwiML answer to a borrower's text, not ours


@dataclass(frozen=True)
class OutboxRow:
    outbox_key: str
    channel: str
    status: str
    provider_id: str | None
    body_sha256: str
    claimed_at: datetime
    error: str | None = None  # why a send failed or is retried (the provider's code, ...)


@dataclass(frozen=True)
class ContactRow:
    key: str
    loan_id: str
    borrower_key: str
    contact_key: str
    channel: str
    step_id: str
    decision: str
    outcome: str | None
    rule: str | None
    occurred_at: datetime
    delivery_status: str | None = None


@dataclass(frozen=True)
class PaymentRow:
    loan_id: str
    payment_id: str
    amount: Decimal
    currency: str
    allocation: dict[str, str]


@dataclass(frozen=True)
class UnappliedRow:
    loan_id: str
    payment_id: str
    amount: Decimal
    currency: str
    status: str
    reason: str = ""  # why it was not applied ("case closed (written_off)", another currency)


@dataclass(frozen=True)
class CaseRow:
    loan_id: str
    state: str
    stage: str
    currency: str
    amount_placed: Decimal
    outstanding: Decimal
    paid_total: Decimal
    rule_pack: str
    opened_at: datetime


@dataclass(frozen=True)
class TaskRow:
    task_key: str
    loan_id: str
    status: str
    outcome: str | None


@dataclass(frozen=True)
class WorkflowFact:
    """A case workflow as Temporal shows it: status, its search attributes, and whether its
    history grew between two looks a while apart."""

    workflow_id: str
    status: str  # running, completed, failed, terminated, timed_out, canceled, continued
    state: str | None  # CollectionState
    outstanding: int | None  # OutstandingAmount (whole units, rounded down)
    history_length: int
    history_length_later: int
    pending: str | None = None  # the pending activity and its attempt, if any

    @property
    def loan_id(self) -> str:
        return self.workflow_id.removeprefix(WORKFLOW_PREFIX)

    @property
    def progressing(self) -> bool:
        return self.history_length_later > self.history_length
