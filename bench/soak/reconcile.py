"""The soak's independent reconciler: what the provider received, what PostgreSQL recorded and what
Temporal holds, compared with what the soak itself reported (its run log).

Written apart from the code it checks: it imports nothing of `workflows/`, `activities/` or
`service/`. It reads the emulator's message log over its control API (httpx), PostgreSQL with
plain SQL (asyncpg) and Temporal through the client's list and describe calls, and it reads the
rule packs' TOML files as data, applying the windows and caps with code of its own.

The checks are pure functions over small dataclasses (`tests/test_soak_reconcile.py` feeds them
hand-made inputs); `gather` fills those from the running services and `report` prints them.

    python -m bench.soak.reconcile --state .state/soak     # against a soak's stack still running
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecutionStatus

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "policies" / "rules"
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


# ------------------------------------------------------------------------------------ inputs


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


@dataclass(frozen=True)
class Cap:
    id: str
    channels: frozenset[str]
    counts: str
    scope: str  # borrower, contact, debt
    limit: int
    period_days: int
    per_channel: bool = False


@dataclass(frozen=True)
class RulePack:
    name: str
    window_start: time
    window_end: time
    window_rule: str
    caps: tuple[Cap, ...] = ()
    post_conversation_quiet_days: int = 0


def ladder_steps(policy: Path) -> frozenset[str]:
    """The ids of a policy's ladder steps (read as data), and the validation notice: contacts
    whose row is written when the case decides them."""
    raw = tomllib.loads(policy.read_text())
    return frozenset({VALIDATION_NOTICE} | {step["id"] for ladder in raw["ladders"].values()
                                            for step in ladder})


def load_rule_packs(folder: Path = RULES_DIR) -> dict[str, RulePack]:
    """The rule packs' windows and caps, read from their TOML files as data."""
    packs = {}
    for path in sorted(folder.glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        caps = tuple(Cap(c["id"], frozenset(c["channels"]), c["counts"], c["scope"],
                         int(c["limit"]), int(c["period_days"]), bool(c.get("per_channel")))
                     for c in raw.get("caps", []))
        packs[raw["name"]] = RulePack(raw["name"], raw["window_start"], raw["window_end"],
                                      raw.get("window_rule", f"{raw['name']}.window"), caps,
                                      int(raw.get("post_conversation_quiet_days", 0)))
    return packs


# --------------------------------------------------------------------------- the findings


@dataclass
class MessageFigures:
    sent: Counter[str] = field(default_factory=Counter)  # outbox rows marked sent, by channel
    delivered: Counter[str] = field(default_factory=Counter)  # provider records matched
    provider_total: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # provider messages nobody claims
    stuck_sends: list[str] = field(default_factory=list)
    delivery_reported: int = 0  # contacts whose delivery status came back "delivered"
    delivery_missing: list[str] = field(default_factory=list)


def body_hash(to: str, body: str) -> str:
    """The outbox's body digest of an SMS (sha256 over the number, a newline and the text)."""
    return hashlib.sha256(f"{to}\n{body}".encode()).hexdigest()


def check_messages(provider: Sequence[ProviderMessage], outbox: Sequence[OutboxRow],
                   contacts: Sequence[ContactRow], ended: set[str] | None = None) -> MessageFigures:
    """One provider message per outbox key marked sent, and nothing marked sent that the provider
    does not have; contacts recorded as sent match sends. `ended`: loans whose case has ended (an
    unfinished send of a running case is not stuck yet)."""
    f = MessageFigures()
    by_key = {o.outbox_key: o for o in outbox}
    by_sid = {o.provider_id: o for o in outbox if o.channel == "sms" and o.provider_id}
    by_hash: dict[str, list[OutboxRow]] = defaultdict(list)
    for o in outbox:
        if o.channel == "sms":
            by_hash[o.body_sha256].append(o)
    matched: Counter[str] = Counter()  # outbox key -> provider messages for it
    for m in provider:
        if m.reply or m.channel not in MESSAGE_CHANNELS:
            continue
        f.provider_total[m.channel] += 1
        row: OutboxRow | None
        if m.channel == "email":
            row = by_key.get(m.outbox_key or "")
        else:
            row = by_sid.get(m.ident)
            if row is None:  # a second copy of a message: same number and text as a claimed one
                same = by_hash.get(body_hash(m.to, m.body), [])
                row = same[0] if len(same) == 1 else None
                if row is None and same:
                    f.unexplained.append(f"sms {m.ident}: text matches {len(same)} outbox rows")
                    continue
        if row is None:
            f.unexplained.append(f"{m.channel} {m.ident}: no outbox row claims it")
            continue
        matched[row.outbox_key] += 1
    for key, n in sorted(matched.items()):
        if n > 1:
            f.duplicates.append(f"{key}: {n} provider messages")
    contact_of = {c.key: c for c in contacts}
    for o in outbox:
        loan = _loan_of_key(o.outbox_key)
        if o.channel not in MESSAGE_CHANNELS:
            continue
        if o.status == "sent":
            f.sent[o.channel] += 1
            if matched[o.outbox_key]:
                f.delivered[o.channel] += 1
                c = contact_of.get(o.outbox_key)
                if c is not None and c.delivery_status == "delivered":
                    f.delivery_reported += 1
                else:
                    f.delivery_missing.append(
                        f"{o.outbox_key}: delivery status {c.delivery_status if c else None}")
            else:
                f.losses.append(f"{o.outbox_key}: marked sent ({o.provider_id}), "
                                "the provider has no such message")
            c = contact_of.get(o.outbox_key)
            if c is None or c.decision not in MADE:
                f.losses.append(f"{o.outbox_key}: sent, but the contact row is "
                                f"{c.decision if c else 'missing'}")
        elif o.status in ("sending", "retry") and (ended is None or loan in ended):
            f.stuck_sends.append(f"{o.outbox_key}: outbox {o.status} since "
                                 f"{o.claimed_at.isoformat()}")
    for c in contacts:
        if c.channel in MESSAGE_CHANNELS and c.decision in MADE and c.outcome == "sent":
            sent = by_key.get(c.key)
            if sent is None or sent.status != "sent":
                f.losses.append(f"{c.key}: contact recorded as sent, outbox "
                                f"{sent.status if sent else 'missing'}")
    return f


def _loan_of_key(outbox_key: str) -> str:
    """collection-<loan>/<step>/<channel> -> <loan>."""
    return outbox_key.split("/", 1)[0].removeprefix(WORKFLOW_PREFIX)


@dataclass
class PaymentFigures:
    reported: int = 0
    reported_amount: dict[str, Decimal] = field(default_factory=dict)  # currency -> sum
    repeats: int = 0  # reports of a payment id reported before
    applied: int = 0
    applied_amount: dict[str, Decimal] = field(default_factory=dict)
    unapplied: int = 0
    unapplied_amount: dict[str, Decimal] = field(default_factory=dict)
    excess_amount: dict[str, Decimal] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # refused, and the loan system was told
    mismatched: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)  # cases whose money does not add up
    unreported: list[str] = field(default_factory=list)  # applied but never reported

    @property
    def conserved(self) -> bool:
        return not (self.lost or self.mismatched or self.unbalanced or self.unreported)


def _add(sums: dict[str, Decimal], currency: str, amount: Decimal) -> None:
    sums[currency] = sums.get(currency, Decimal("0")) + amount


def check_payments(reported: Sequence[ReportedPayment], applied: Sequence[PaymentRow],
                   unapplied: Sequence[UnappliedRow], cases: Sequence[CaseRow],
                   workflows: Sequence[WorkflowFact] = ()) -> PaymentFigures:
    """Every payment reported is applied or kept unapplied, once, to the cent; and each case's
    balance is what was placed less what was applied to it (PostgreSQL and Temporal agree)."""
    f = PaymentFigures()
    first: dict[tuple[str, str], ReportedPayment] = {}
    for r in reported:
        k = (r.loan_id, r.payment_id)
        if k in first:
            f.repeats += 1
            continue
        first[k] = r
    got = {(p.loan_id, p.payment_id): p for p in applied}
    kept = {(u.loan_id, u.payment_id): u for u in unapplied if u.status == "unapplied"}
    for k, r in list(first.items()):
        if r.answer in REFUSALS and k not in got and k not in kept:
            f.refused.append(f"{r.loan_id} payment {r.payment_id} of {r.amount} {r.currency}: "
                             f"answered {r.answer}, not kept")
            del first[k]
    f.reported = len(first)
    for r in first.values():
        _add(f.reported_amount, r.currency, r.amount)
    for k, r in sorted(first.items()):
        p, u = got.get(k), kept.get(k)
        if p is None and u is None:
            f.lost.append(f"{r.loan_id} payment {r.payment_id} of {r.amount} {r.currency}: "
                          f"neither applied nor unapplied (answer {r.answer})")
        elif p is not None and u is not None:
            f.mismatched.append(f"{r.loan_id} payment {r.payment_id}: applied and unapplied")
        else:
            row_amount = p.amount if p is not None else u.amount  # type: ignore[union-attr]
            if row_amount != r.amount:
                f.mismatched.append(f"{r.loan_id} payment {r.payment_id}: reported {r.amount}, "
                                    f"recorded {row_amount}")
    for p in applied:
        f.applied += 1
        _add(f.applied_amount, p.currency, p.amount)
        if (p.loan_id, p.payment_id) not in first:
            f.unreported.append(f"{p.loan_id} payment {p.payment_id}: applied, never reported")
        parts = sum((Decimal(v) for v in p.allocation.values()), Decimal("0"))
        if parts != p.amount:
            f.mismatched.append(f"{p.loan_id} payment {p.payment_id}: allocation sums to {parts},"
                                f" amount {p.amount}")
        _add(f.excess_amount, p.currency, Decimal(p.allocation.get("excess", "0")))
    for u in kept.values():
        f.unapplied += 1
        _add(f.unapplied_amount, u.currency, u.amount)
    to_balance: dict[str, Decimal] = defaultdict(Decimal)
    for p in applied:
        to_balance[p.loan_id] += p.amount - Decimal(p.allocation.get("excess", "0"))
    sa = {w.loan_id: w for w in workflows}
    for c in cases:
        want = c.amount_placed - to_balance[c.loan_id]
        if c.outstanding != want:
            f.unbalanced.append(f"{c.loan_id}: placed {c.amount_placed} - applied "
                                f"{to_balance[c.loan_id]} = {want}, outstanding {c.outstanding}")
        w = sa.get(c.loan_id)
        if (w is not None and w.status != "running" and w.outstanding is not None
                and w.outstanding != math.floor(c.outstanding)):
            f.unbalanced.append(f"{c.loan_id}: Temporal OutstandingAmount {w.outstanding}, "
                                f"PostgreSQL {c.outstanding}")
    return f


@dataclass
class CaseFigures:
    started: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # running and still progressing
    disagree: list[str] = field(default_factory=list)  # PostgreSQL and Temporal disagree


def check_cases(loans: Sequence[Loan], workflows: Sequence[WorkflowFact],
                cases: Sequence[CaseRow]) -> CaseFigures:
    """Every case started exists in Temporal and PostgreSQL; each is in an end state, or still
    progressing (its history grew between two looks); the two stores agree on how it ended."""
    f = CaseFigures()
    wf = {w.loan_id: w for w in workflows}
    rows = {c.loan_id: c for c in cases}
    for loan in loans:
        if not loan.started:
            continue
        f.started += 1
        w, c = wf.get(loan.loan_id), rows.get(loan.loan_id)
        if w is None:
            f.stuck.append(f"{loan.loan_id}: started, but Temporal has no workflow")
            continue
        state = w.state or (c.state if c else "unknown")
        f.by_state[state if w.status in ("running", "completed") else w.status] += 1
        if w.status == "running":
            if w.progressing:
                f.unfinished.append(f"{loan.loan_id}: running, in state {state}")
            else:
                f.stuck.append(f"{loan.loan_id}: running in state {state}, history not growing "
                               f"({w.history_length} events)"
                               + (f", pending {w.pending}" if w.pending else ""))
            continue
        if w.status != "completed":
            f.stuck.append(f"{loan.loan_id}: workflow {w.status}")
            continue
        if c is None:
            f.disagree.append(f"{loan.loan_id}: completed in Temporal, no PostgreSQL case row")
        elif c.state not in END_STATES or (w.state is not None and c.state != w.state):
            f.disagree.append(f"{loan.loan_id}: Temporal {w.state}, PostgreSQL {c.state}")
    return f


@dataclass
class ComplianceFigures:
    contacts: int = 0
    outside_window: list[str] = field(default_factory=list)
    over_cap: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)  # the system's own breach rows
    late_at_provider: list[str] = field(default_factory=list)
    provider_lag_seconds: list[float] = field(default_factory=list)
    # Notices owed to the borrower (receipts, acknowledgements) are checked against the window
    # before the send but recorded after it: on a compressed clock a second of sending is hours
    # of policy time, so their recorded time says nothing about the window (information).
    notices_recorded_outside: list[str] = field(default_factory=list)

    @property
    def breaches(self) -> int:
        return (len(self.outside_window) + len(self.over_cap) + len(self.flagged)
                + len(self.late_at_provider))


def in_window(at: datetime, tz: str, pack: RulePack) -> bool:
    wall = at.astimezone(ZoneInfo(tz)).time()
    return pack.window_start <= wall < pack.window_end


def _counted_channel(channel: str) -> str:
    return "call" if channel in PHONE_CHANNELS else channel


def _cap_breaches(pack: RulePack, tz: str, made: list[ContactRow]) -> list[str]:
    """Each cap applied to the contacts made: a group over its limit is one finding."""
    found = []
    for cap in pack.caps:
        on = {c for c in cap.channels} | {_counted_channel(c) for c in cap.channels}
        chosen = [c for c in made if c.channel in on or _counted_channel(c.channel) in on]
        chosen = [c for c in chosen if (c.outcome or "sent") in COUNTS[cap.counts]]
        groups: dict[tuple[str, ...], list[ContactRow]] = defaultdict(list)
        for c in chosen:
            scope = {"borrower": c.borrower_key, "contact": c.contact_key,
                     "debt": c.loan_id}[cap.scope]
            channel = _counted_channel(c.channel) if cap.per_channel else "*"
            if cap.period_days == 1:
                groups[(scope, channel, c.occurred_at.astimezone(ZoneInfo(tz)).date()
                        .isoformat())].append(c)
            else:
                groups[(scope, channel)].append(c)
        for key, group in groups.items():
            if cap.period_days == 1:
                if len(group) > cap.limit:
                    found.append(f"{group[0].loan_id}: {cap.id}: {len(group)} > {cap.limit} on "
                                 f"{key[-1]}")
                continue
            at = sorted(c.occurred_at for c in group)
            span = timedelta(days=cap.period_days)
            for i, t in enumerate(at):
                n = sum(1 for u in at[: i + 1] if t - span < u <= t)
                if n > cap.limit:
                    found.append(f"{group[0].loan_id}: {cap.id}: {n} > {cap.limit} in "
                                 f"{cap.period_days} days to {t.isoformat()}")
                    break
    return found


def check_compliance(contacts: Sequence[ContactRow], loans: Sequence[Loan],
                     cases: Sequence[CaseRow], packs: dict[str, RulePack],
                     provider: Sequence[ProviderMessage] = (), outbox: Sequence[OutboxRow] = (),
                     day_seconds: int = DAY,
                     decided_steps: frozenset[str] | None = None) -> ComplianceFigures:
    """Contacts made inside the borrower's window and under every cap of their rule pack, by this
    module's own reading of the packs; and each message received by the provider inside the
    window on the uncompressed clock (the decision's policy time plus the real delay to the
    provider, since a compressed clock turns a second's retry into hours)."""
    f = ComplianceFigures()
    tz_of = {loan.loan_id: loan.timezone for loan in loans}
    case_of = {c.loan_id: c for c in cases}
    made = [c for c in contacts if c.decision in MADE]
    f.contacts = len(made)
    by_borrower: dict[str, list[ContactRow]] = defaultdict(list)
    for c in made:
        case, tz = case_of.get(c.loan_id), tz_of.get(c.loan_id)
        if case is None or tz is None or case.rule_pack not in packs:
            continue
        pack = packs[case.rule_pack]
        if c.decision == "breach":
            f.flagged.append(f"{c.loan_id}: {c.channel} {c.step_id} recorded as a breach of "
                             f"{c.rule}")
        if not in_window(c.occurred_at, tz, pack):
            local = c.occurred_at.astimezone(ZoneInfo(tz))
            line = (f"{c.loan_id}: {c.channel} {c.step_id} at {local:%H:%M} local ({tz}), "
                    f"window {pack.window_start:%H:%M}-{pack.window_end:%H:%M}")
            if _is_notice(c, decided_steps):
                f.notices_recorded_outside.append(line)
            else:
                f.outside_window.append(line)
        by_borrower[c.borrower_key].append(c)
    for group in by_borrower.values():
        case = case_of[group[0].loan_id]
        f.over_cap.extend(_cap_breaches(packs[case.rule_pack], tz_of[group[0].loan_id], group))
    for loan_id, rows in _by_loan(made).items():
        case, tz = case_of.get(loan_id), tz_of.get(loan_id)
        if case is None or tz is None or case.rule_pack not in packs:
            continue
        quiet = packs[case.rule_pack].post_conversation_quiet_days
        if not quiet:
            continue
        calls = sorted((c for c in rows if _counted_channel(c.channel) == "call"),
                       key=lambda c: c.occurred_at)
        for i, c in enumerate(calls):
            talks = [t for t in calls[:i] if t.outcome == "connected"
                     and t.occurred_at <= c.occurred_at < t.occurred_at + timedelta(days=quiet)]
            if talks:
                f.over_cap.append(f"{loan_id}: call {c.step_id} within {quiet} days of a "
                                  "conversation")
    decided = [c for c in made if not _is_notice(c, decided_steps)]
    _check_provider_times(f, decided, case_of, tz_of, packs, provider, outbox, day_seconds)
    return f


def _is_notice(c: ContactRow, decided_steps: frozenset[str] | None) -> bool:
    """A message the case owed (no reservation, its row written after the send)."""
    return (decided_steps is not None and c.channel in MESSAGE_CHANNELS
            and c.step_id not in decided_steps)


def _by_loan(rows: Iterable[ContactRow]) -> dict[str, list[ContactRow]]:
    out: dict[str, list[ContactRow]] = defaultdict(list)
    for r in rows:
        out[r.loan_id].append(r)
    return out


def _check_provider_times(f: ComplianceFigures, made: list[ContactRow],
                          case_of: dict[str, CaseRow], tz_of: dict[str, str],
                          packs: dict[str, RulePack], provider: Sequence[ProviderMessage],
                          outbox: Sequence[OutboxRow], day_seconds: int) -> None:
    contact_of = {c.key: c for c in made}
    by_sid = {o.provider_id: o.outbox_key for o in outbox if o.provider_id}
    for m in provider:
        if m.reply or m.channel not in MESSAGE_CHANNELS:
            continue
        key = m.outbox_key if m.channel == "email" else by_sid.get(m.ident)
        c = contact_of.get(key or "")
        if c is None:
            continue
        case, tz = case_of.get(c.loan_id), tz_of.get(c.loan_id)
        if case is None or tz is None or case.rule_pack not in packs:
            continue
        # The decision's real instant, from its policy instant on the case's clock.
        origin = case.opened_at
        decided = origin + (c.occurred_at - origin) * (day_seconds / DAY)
        lag = max((m.received_at - decided).total_seconds(), 0.0)
        f.provider_lag_seconds.append(lag)
        at_provider = c.occurred_at + timedelta(seconds=lag)
        if not in_window(at_provider, tz, packs[case.rule_pack]):
            f.late_at_provider.append(f"{c.loan_id}: {m.channel} {c.step_id} reached the provider"
                                      f" {lag:.1f} s after the decision, outside the window")


# ----------------------------------------------------------------------------- the whole


@dataclass
class Reconciliation:
    messages: MessageFigures
    payments: PaymentFigures
    cases: CaseFigures
    compliance: ComplianceFigures
    outcomes_reported: int = 0
    outcomes_recorded: int = 0
    outcomes_lost: list[str] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        m, p, c = self.messages, self.payments, self.cases
        return (not m.duplicates and not m.losses and not m.unexplained and not m.stuck_sends
                and p.conserved and not c.stuck and not c.disagree and not self.outcomes_lost
                and self.compliance.breaches == 0)


def check_outcomes(reported: Sequence[ReportedOutcome],
                   tasks: Sequence[TaskRow]) -> tuple[int, int, list[str]]:
    """Outcomes the case accepted are on their task; returns (accepted, recorded, lost)."""
    by_key = {t.task_key: t for t in tasks}
    accepted = {r.task_key: r for r in reported if r.accepted}
    lost = []
    recorded = 0
    for key, r in sorted(accepted.items()):
        t = by_key.get(key)
        if t is not None and t.status == "done" and t.outcome == r.outcome:
            recorded += 1
        else:
            lost.append(f"{r.loan_id} task {key}: outcome {r.outcome} accepted, task "
                        f"{t.status if t else 'missing'} {t.outcome if t else ''}".rstrip())
    return len(accepted), recorded, lost


def reconcile(*, loans: Sequence[Loan], payments: Sequence[ReportedPayment],
              outcomes: Sequence[ReportedOutcome], provider: Sequence[ProviderMessage],
              outbox: Sequence[OutboxRow], contacts: Sequence[ContactRow],
              applied: Sequence[PaymentRow], unapplied: Sequence[UnappliedRow],
              cases: Sequence[CaseRow], tasks: Sequence[TaskRow],
              workflows: Sequence[WorkflowFact], packs: dict[str, RulePack],
              day_seconds: int, faults: dict[str, Any] | None = None,
              decided_steps: frozenset[str] | None = None) -> Reconciliation:
    ended = {w.loan_id for w in workflows if w.status != "running"}
    accepted, recorded, lost = check_outcomes(outcomes, tasks)
    return Reconciliation(
        messages=check_messages(provider, outbox, contacts, ended),
        payments=check_payments(payments, applied, unapplied, cases, workflows),
        cases=check_cases(loans, workflows, cases),
        compliance=check_compliance(contacts, loans, cases, packs, provider, outbox,
                                    day_seconds, decided_steps),
        outcomes_reported=accepted, outcomes_recorded=recorded, outcomes_lost=lost,
        faults=faults or {})


# ---------------------------------------------------------------------------- gathering


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def provider_log(emulator_url: str) -> list[ProviderMessage]:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=120) as http:
        resp = await http.get("/_emulator/messages")
        resp.raise_for_status()
        found = resp.json()["messages"]
    return [ProviderMessage(
        channel=m["channel"], ident=m["id"], to=m["to"], body=m.get("body") or "",
        outbox_key=(m.get("custom_args") or {}).get("outbox_key"),
        received_at=_aware(datetime.fromisoformat(m["received_at"])),
        reply=bool(m.get("reply_to"))) for m in found]


async def provider_stats(emulator_url: str) -> dict[str, dict[str, int]]:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60) as http:
        resp = await http.get("/_emulator/stats")
        resp.raise_for_status()
        stats: dict[str, dict[str, int]] = resp.json()
        return stats


async def database_rows(dsn: str, loan_ids: set[str]) -> dict[str, list[Any]]:
    """The soak's loans' rows, by table, with plain SQL."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = sorted(loan_ids)
        keys = [f"{WORKFLOW_PREFIX}{i}/" for i in ids]
        outbox = await conn.fetch(
            "SELECT outbox_key, channel, status, provider_id, body_sha256, claimed_at FROM outbox "
            "WHERE split_part(outbox_key, '/', 1) || '/' = ANY($1::text[])", keys)
        contacts = await conn.fetch(
            "SELECT idempotency_key, loan_id, borrower_key, contact_key, channel, step_id, "
            "decision, outcome, rule, occurred_at, delivery_status FROM contacts "
            "WHERE loan_id = ANY($1::text[])", ids)
        payments = await conn.fetch(
            "SELECT loan_id, payment_id, amount, currency, allocation FROM payments "
            "WHERE loan_id = ANY($1::text[])", ids)
        unapplied = await conn.fetch(
            "SELECT loan_id, payment_id, amount, currency, status FROM unapplied_payments "
            "WHERE loan_id = ANY($1::text[])", ids)
        cases = await conn.fetch(
            "SELECT loan_id, state, stage, currency, amount_placed, outstanding, paid_total, "
            "rule_pack, opened_at FROM cases WHERE loan_id = ANY($1::text[])", ids)
        tasks = await conn.fetch(
            "SELECT task_key, loan_id, status, outcome FROM tasks WHERE loan_id = ANY($1::text[])",
            ids)
    finally:
        await conn.close()
    return {
        "outbox": [OutboxRow(r["outbox_key"], r["channel"], r["status"], r["provider_id"],
                             r["body_sha256"], r["claimed_at"]) for r in outbox],
        "contacts": [ContactRow(r["idempotency_key"], r["loan_id"], r["borrower_key"],
                                r["contact_key"], r["channel"], r["step_id"], r["decision"],
                                r["outcome"], r["rule"], r["occurred_at"], r["delivery_status"])
                     for r in contacts],
        "payments": [PaymentRow(r["loan_id"], r["payment_id"], r["amount"], r["currency"].strip(),
                                {k: str(v) for k, v in json.loads(r["allocation"]).items()})
                     for r in payments],
        "unapplied": [UnappliedRow(r["loan_id"], r["payment_id"], Decimal(r["amount"]),
                                   r["currency"].strip(), r["status"]) for r in unapplied],
        "cases": [CaseRow(r["loan_id"], r["state"], r["stage"], r["currency"].strip(),
                          r["amount_placed"], r["outstanding"], r["paid_total"], r["rule_pack"],
                          r["opened_at"]) for r in cases],
        "tasks": [TaskRow(r["task_key"], r["loan_id"], r["status"], r["outcome"])
                  for r in tasks],
    }


_STATUS = {
    WorkflowExecutionStatus.RUNNING: "running", WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed", WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


async def temporal_facts(client: Client, loan_ids: set[str],
                         settle_seconds: float = 20) -> list[WorkflowFact]:
    """Every case workflow's latest run: listed, then each running one described twice,
    `settle_seconds` apart, to tell a stuck case from a slow one."""
    latest: dict[str, Any] = {}
    async for w in client.list_workflows(f"WorkflowId STARTS_WITH '{WORKFLOW_PREFIX}'"):
        if w.id.removeprefix(WORKFLOW_PREFIX) in loan_ids and w.id not in latest:
            latest[w.id] = w  # newest run first
    first: dict[str, tuple[int, str | None]] = {}
    running = [wid for wid, w in latest.items() if w.status == WorkflowExecutionStatus.RUNNING]
    limit = asyncio.Semaphore(20)

    async def look(wid: str) -> tuple[int, str | None]:
        async with limit:
            d = await client.get_workflow_handle(wid).describe()
        raw = d.raw_description
        pending = None
        if raw.pending_activities:
            a = raw.pending_activities[0]
            pending = (f"{a.activity_type.name} attempt {a.attempt}"
                       + (f": {a.last_failure.message[:120]}" if a.last_failure.message else ""))
        return raw.workflow_execution_info.history_length, pending

    for wid, got in zip(running, await asyncio.gather(*(look(w) for w in running)), strict=True):
        first[wid] = got
    if running:
        await asyncio.sleep(settle_seconds)
    later = dict(zip(running, await asyncio.gather(*(look(w) for w in running)), strict=True))
    facts = []
    for wid, w in latest.items():
        sa = w.search_attributes or {}
        state = sa.get("CollectionState")
        outstanding = sa.get("OutstandingAmount")
        length = first.get(wid, (w.history_length or 0, None))
        facts.append(WorkflowFact(
            workflow_id=wid, status=_STATUS.get(w.status, "unknown") if w.status else "unknown",
            state=str(state[0]) if state else None,
            outstanding=int(outstanding[0]) if outstanding else None,
            history_length=length[0], history_length_later=later.get(wid, length)[0],
            pending=later.get(wid, length)[1]))
    return facts


@dataclass(frozen=True)
class RunLog:
    """What the soak reported and injected (`run.json`, written by the driver)."""

    loans: list[Loan]
    payments: list[ReportedPayment]
    outcomes: list[ReportedOutcome]
    faults: dict[str, Any]
    endpoints: dict[str, str]
    day_seconds: int
    policy: Path

    @classmethod
    def read(cls, path: Path) -> RunLog:
        raw = json.loads(path.read_text())
        return cls(
            loans=[Loan(x["loan_id"], x["timezone"], x["currency"], Decimal(x["amount"]),
                        x["started"]) for x in raw["loans"]],
            payments=[ReportedPayment(x["loan_id"], x["payment_id"], Decimal(x["amount"]),
                                      x["currency"], x["answer"]) for x in raw["payments"]],
            outcomes=[ReportedOutcome(x["task_key"], x["loan_id"], x["outcome"], x["accepted"])
                      for x in raw["outcomes"]],
            faults=raw["faults"], endpoints=raw["endpoints"], day_seconds=raw["day_seconds"],
            policy=Path(raw["policy_file"]))


async def gather(run: RunLog, client: Client, settle_seconds: float = 20) -> Reconciliation:
    ids = {loan.loan_id for loan in run.loans}
    provider = await provider_log(run.endpoints["emulator_url"])
    stats = await provider_stats(run.endpoints["emulator_url"])
    workflows = await temporal_facts(client, ids, settle_seconds)
    rows = await database_rows(run.endpoints["dsn"], ids)  # after Temporal: the later picture
    faults = dict(run.faults)
    faults["provider answers (emulator stats)"] = stats
    return reconcile(loans=run.loans, payments=run.payments, outcomes=run.outcomes,
                     provider=provider, outbox=rows["outbox"], contacts=rows["contacts"],
                     applied=rows["payments"], unapplied=rows["unapplied"], cases=rows["cases"],
                     tasks=rows["tasks"], workflows=workflows, packs=load_rule_packs(),
                     day_seconds=run.day_seconds, faults=faults,
                     decided_steps=ladder_steps(run.policy))


# ------------------------------------------------------------------------------ printing


def _money(sums: dict[str, Decimal]) -> str:
    return ", ".join(f"{v.quantize(CENT)} {k}" for k, v in sorted(sums.items())) or "0"


def _listed(title: str, items: Sequence[str], out: list[str], shown: int = 15) -> None:
    out.append(f"  {title}: {len(items)}")
    out.extend(f"    - {x}" for x in items[:shown])
    if len(items) > shown:
        out.append(f"    ... and {len(items) - shown} more")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(r: Reconciliation) -> str:
    out: list[str] = []
    m, p, c, k = r.messages, r.payments, r.cases, r.compliance
    out.append("messages (outbox marked sent vs provider log)")
    for ch in sorted(set(m.sent) | set(m.provider_total)):
        out.append(f"  {ch}: sent {m.sent[ch]}, delivered {m.delivered[ch]}, provider received "
                   f"{m.provider_total[ch]}")
    _listed("duplicates", m.duplicates, out)
    _listed("losses", m.losses, out)
    _listed("provider messages nobody sent", m.unexplained, out)
    _listed("sends left unfinished", m.stuck_sends, out)
    out.append(f"  delivery reports (webhooks) recorded as delivered: {m.delivery_reported} of "
               f"{sum(m.delivered.values())}")
    _listed("delivery reports not recorded (information)", m.delivery_missing, out, shown=5)
    out.append("payments (reported vs applied + unapplied)")
    out.append(f"  reported {p.reported} ({_money(p.reported_amount)}), repeated reports "
               f"{p.repeats}")
    out.append(f"  applied {p.applied} ({_money(p.applied_amount)}; of which excess after close "
               f"{_money(p.excess_amount)}), unapplied {p.unapplied} "
               f"({_money(p.unapplied_amount)})")
    out.append(f"  amounts conserved to the cent: {'yes' if p.conserved else 'NO'}")
    _listed("lost", p.lost, out)
    _listed("refused, the loan system told (not counted above)", p.refused, out, shown=5)
    _listed("amounts that differ", p.mismatched, out)
    _listed("cases whose balance does not add up", p.unbalanced, out)
    _listed("applied but never reported", p.unreported, out)
    out.append("cases")
    out.append(f"  started {c.started}: " + ", ".join(f"{s} {n}" for s, n in
                                                      sorted(c.by_state.items())))
    _listed("stuck (not ended, not progressing)", c.stuck, out)
    _listed("still running and progressing", c.unfinished, out, shown=5)
    _listed("PostgreSQL and Temporal disagree", c.disagree, out)
    out.append(f"agent outcomes: accepted {r.outcomes_reported}, recorded on their task "
               f"{r.outcomes_recorded}")
    _listed("lost", r.outcomes_lost, out)
    out.append(f"contact rules ({k.contacts} contacts made)")
    _listed("outside the window", k.outside_window, out)
    _listed("over a cap", k.over_cap, out)
    _listed("recorded by the case as breaches", k.flagged, out)
    lags = k.provider_lag_seconds
    out.append(f"  provider receipt after the decision (real s): p50 {_pct(lags, 0.5):.2f}, "
               f"p99 {_pct(lags, 0.99):.2f}, max {max(lags, default=0):.2f}")
    _listed("reached the provider outside the window", k.late_at_provider, out)
    _listed("notices recorded after their send outside the window (information: the "
            "compressed clock)", k.notices_recorded_outside, out, shown=5)
    out.append("faults injected")
    for name, value in r.faults.items():
        out.append(f"  {name}: {json.dumps(value, default=str, sort_keys=True)}")
    out.append(f"RESULT: {'PASS' if r.ok else 'FAIL'} (duplicates {len(m.duplicates)}, losses "
               f"{len(m.losses) + len(p.lost) + len(r.outcomes_lost)}, stuck "
               f"{len(c.stuck) + len(m.stuck_sends)}, amounts conserved "
               f"{'yes' if p.conserved else 'no'}, breaches {k.breaches})")
    return "\n".join(out)


def summary(r: Reconciliation) -> dict[str, Any]:
    """The figures as JSON (the soak writes them beside its log)."""
    return {
        "ok": r.ok,
        "messages": {"sent": dict(r.messages.sent), "delivered": dict(r.messages.delivered),
                     "provider": dict(r.messages.provider_total),
                     "duplicates": r.messages.duplicates, "losses": r.messages.losses,
                     "unexplained": r.messages.unexplained, "stuck": r.messages.stuck_sends,
                     "delivery_reported": r.messages.delivery_reported,
                     "delivery_missing": len(r.messages.delivery_missing)},
        "payments": {k: (v if not isinstance(v, dict) else {c: str(a) for c, a in v.items()})
                     for k, v in asdict(r.payments).items()},
        "cases": {"started": r.cases.started, "by_state": dict(r.cases.by_state),
                  "stuck": r.cases.stuck, "unfinished": len(r.cases.unfinished),
                  "disagree": r.cases.disagree},
        "outcomes": {"accepted": r.outcomes_reported, "recorded": r.outcomes_recorded,
                     "lost": r.outcomes_lost},
        "compliance": {"contacts": r.compliance.contacts,
                       "outside_window": r.compliance.outside_window,
                       "over_cap": r.compliance.over_cap, "flagged": r.compliance.flagged,
                       "late_at_provider": r.compliance.late_at_provider},
        "faults": r.faults,
    }


async def _main(state: Path, settle: float) -> int:
    run = RunLog.read(state / "run.json")
    client = await Client.connect(run.endpoints["temporal_address"])
    result = await gather(run, client, settle)
    print(report(result))
    return 0 if result.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak.reconcile",
                                     description="Reconcile a soak's stack (still running) "
                                                 "against its run log")
    parser.add_argument("--state", type=Path, default=Path(".state/soak"))
    parser.add_argument("--settle", type=float, default=20,
                        help="seconds between the two looks at a running case")
    args = parser.parse_args()
    sys.exit(asyncio.run(_main(args.state, args.settle)))


if __name__ == "__main__":
    main()
