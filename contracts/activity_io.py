"""The contract between the workflow and its activities: names and one dataclass in, one out.

Kept in `contracts/` so the workflow can call activities by name without importing drivers or SDKs
into the sandbox; `activities/` implements these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from contracts.agency import PlacementRecord

# The send activities' names belong to the channel table; re-exported for the callers of old.
from contracts.channels import SEND_EMAIL as SEND_EMAIL
from contracts.channels import SEND_SMS as SEND_SMS
from contracts.policy import RulePack

RESOLVE_POLICY = "resolve_policy"
RECORD = "record"
RESERVE_CONTACT = "reserve_contact"
RECORD_CONTACT = "record_contact"
CREATE_TASK = "create_task"
CLOSE_TASK = "close_task"
RECORD_LEGAL_ACTION = "record_legal_action"


@dataclass
class CaseSnapshot:
    loan_id: str
    workflow_id: str
    borrower_key: str
    policy_name: str
    policy_version: str
    segment: str
    rule_pack: str
    currency: str
    amount_placed: Decimal
    outstanding: Decimal
    paid_total: Decimal
    stage: str
    state: str
    days_past_due: int
    assigned_agent: str | None
    due_date: date
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    close_reason: str | None = None
    # Champion/challenger (policies/experiments.py): pinned with the policy when the case opened.
    experiment: str | None = None
    arm: str | None = None


@dataclass
class EventRecord:
    key: str
    loan_id: str
    kind: str
    summary: str
    occurred_at: datetime
    actor: str | None = None
    rule: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PaymentRecord:
    loan_id: str
    payment_id: str
    amount: Decimal
    currency: str
    paid_at: datetime
    allocation: dict[str, str]


@dataclass
class StageChange:
    key: str
    loan_id: str
    from_stage: str | None
    to_stage: str
    occurred_at: datetime


@dataclass
class ContactRequest:
    """Ask for room under the caps; when granted the attempt row is written in the same step."""

    key: str
    loan_id: str
    borrower_key: str
    contact_key: str
    channel: str
    step_id: str
    stage: str
    template: str | None
    at: datetime
    timezone: str
    rule_pack: RulePack
    # Only evaluate the caps at `at` (nothing is written), leaving out the attempt keyed
    # `exclude_key`: how an agent's call is checked at the time it was made.
    check_only: bool = False
    exclude_key: str | None = None


@dataclass
class ContactDecision:
    allowed: bool
    rule: str | None
    reason: str
    retry_at: datetime | None
    # Room left under each cap on this channel once this contact is made (cap id -> count).
    caps_left: dict[str, int] = field(default_factory=dict)
    # Refused because the address may not be used on this channel until someone lifts it (an SMS
    # opt-out, a number that cannot take SMS, an e-mail address that bounced or unsubscribed):
    # waiting will not help, so the step skips this channel. False in histories before it.
    suppressed: bool = False


@dataclass
class ContactRecord:
    """A contact decision with no attempt behind it (deferred, skipped), or an outcome update."""

    key: str
    loan_id: str
    borrower_key: str
    contact_key: str
    channel: str
    step_id: str
    stage: str
    decision: str
    at: datetime
    template: str | None = None
    rule: str | None = None
    reason: str | None = None
    outcome: str | None = None
    # The borrower's local date of `at`; with `moved`, an attempt already written is moved to
    # `at` (an agent's call is recorded when it happened, not when its task was created).
    local_date: date | None = None
    moved: bool = False


@dataclass
class UnappliedPayment:
    """Money reported as received that could not be applied, kept with the reason."""

    loan_id: str
    payment_id: str
    amount: Decimal
    currency: str
    received_at: datetime
    reason: str
    status: str = "unapplied"  # "resolved" once a later report of the same id is applied


@dataclass
class RecordBatch:
    """Everything a workflow step learned, written in one transaction."""

    case: CaseSnapshot | None = None
    events: list[EventRecord] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    # Contact decisions and outcomes (executions with local database activities; older ones sent
    # each through `record_contact`).
    contacts: list[ContactRecord] = field(default_factory=list)
    unapplied: list[UnappliedPayment] = field(default_factory=list)
    # Placement rows (since workflows/carried_writes.py's patch; before it one
    # `record_placement` each).
    placements: list[PlacementRecord] = field(default_factory=list)


@dataclass
class RecordResult:
    """What a `record` batch wrote. The events come back so that they stay readable in the event
    history: a local activity's input is not kept there, its result is (`starter.py history` reads
    them when neither the worker nor PostgreSQL can answer)."""

    written: int
    events: list[EventRecord] = field(default_factory=list)


# A send's status when the window had closed (or a quiet day begun) by the time it would have
# gone out, after activity retries: nothing was sent; the case defers it to the next opening.
OUTSIDE_WINDOW = "outside_window"
# A send's status when the reservation it carried was refused (SendResult.decision says why):
# nothing was sent.
NOT_RESERVED = "not_reserved"


@dataclass
class SendWindow:
    """What the send activity checks the contact window against right before the provider call:
    the rule pack and the borrower's zone, and the decision's instant on the case's clock and in
    real time. The send's instant is the decision's plus the real time since: real time in
    production; on a compressed clock, what the send's delay would be on a real one."""

    rule_pack: RulePack
    timezone: str
    decided_at: datetime  # policy time
    decided_real: datetime  # real time


@dataclass
class SendInput:
    outbox_key: str
    loan_id: str
    channel: str
    to: str
    template: str
    locale: str
    context: dict[str, Any]
    contact_key: str | None = None
    # Histories from before the window was checked at send time carry none (not checked).
    window: SendWindow | None = None
    # The borrower's vault entry (issue 18): `to` and the context's borrower_name are then blank,
    # read from the vault by the send activity. Empty: both inline, as before it.
    borrower_ref: str = ""
    # Since workflows/carried_writes.py's patch a send carries the case's writes: `records`
    # (what the case learned before it) and `reserve` (its place under the caps) are committed
    # together first; if the reservation is refused nothing is sent (NOT_RESERVED). `on_sent`
    # is what the case records once the provider has taken the message, written then.
    records: RecordBatch | None = None
    reserve: ContactRequest | None = None
    on_sent: RecordBatch | None = None


@dataclass
class SendResult:
    # "sent", "failed" (permanent: invalid number, rejected address) or OUTSIDE_WINDOW
    status: str
    provider_id: str | None = None
    error_code: str | None = None
    reused: bool = False  # an earlier attempt had already sent it
    # A failure that says the address itself is no good (not the one message): the channel's
    # adapter decides from the provider's error code. Histories from before it read False.
    address_unusable: bool = False
    # The caps' answer to the reservation the send carried (SendInput.reserve), if it did.
    decision: ContactDecision | None = None


@dataclass
class TaskInput:
    task_key: str
    loan_id: str
    workflow_id: str
    kind: str
    step_id: str
    priority: int
    due_by: datetime
    created_at: datetime
    # When it may be worked, for the queue: the rule pack's window in the borrower's local time,
    # the allowed periods inside the task's span (UTC ISO pairs), and the room left under each cap
    # on the day the task was created. Defaults: tasks recorded before they were carried.
    timezone: str = ""
    window_start: str = ""  # "08:00"
    window_end: str = ""  # "22:00"
    work_windows: list[list[str]] = field(default_factory=list)
    caps_left: dict[str, int] = field(default_factory=dict)
    rule_pack: str = ""
    # As for SendInput: the writes that travel with it, and the task's reservation. Refused, no
    # task is created; granted, its room under the caps is written as `caps_left`, and `on_created`
    # (the case's record of the task) with it.
    records: RecordBatch | None = None
    reserve: ContactRequest | None = None
    on_created: RecordBatch | None = None


@dataclass
class TaskCreated:
    created: bool  # the task is in the queue (made now or by an earlier attempt); False: refused
    decision: ContactDecision | None = None  # the answer to TaskInput.reserve, if it carried one


@dataclass
class TaskClose:
    task_key: str
    status: str  # "done", "expired", "cancelled" (before TASK_RULES_PATCH) or "withdrawn"
    outcome: str
    completed_at: datetime
    agent: str | None = None
    note: str | None = None
    reason: str | None = None  # why it was withdrawn
    # When the call or visit happened, if it did, and the rule it broke, if any.
    contacted_at: datetime | None = None
    breach_rule: str | None = None
    records: RecordBatch | None = None  # the writes that travel with it


@dataclass
class LegalInput:
    key: str
    loan_id: str
    action: str
    created_at: datetime
    documents: list[dict[str, Any]] = field(default_factory=list)
    records: RecordBatch | None = None  # the writes that travel with it


@dataclass
class FollowUpInput:
    """Ask the provider what became of a message it accepted (`contracts/channels.py`'s
    `follow_up`): "check" its state, "remind" the staff member once, or "cancel" it."""

    channel: str
    provider_id: str
    action: str  # "check", "remind" or "cancel"
    outbox_key: str
    loan_id: str


@dataclass
class FollowUpResult:
    # "pending" (not yet: staff not confirmed, call still ringing), "delivered" or "not_delivered".
    state: str
    # As the caps and the contact row record it: "connected", "unanswered" (voice), "sent"
    # (a confirmed WeCom message), or None while pending.
    outcome: str | None = None
    # The provider's own words, no personal data: "completed/human", "no-answer", "unconfirmed".
    detail: str = ""
