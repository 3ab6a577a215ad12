"""A simulated case: the same ladder, rules and timers, with its side effects kept in memory.

A simulation answers "what would this policy do to this loan" without messaging anyone or
touching the book: nothing is sent, no agent task is created, nothing is written to PostgreSQL
and no search attribute is set (so simulated cases never show in `list`). What the real case
learns from the database, the room left under the contact caps, is decided here from the
simulated case's own attempts, by the same pure `compliance.evaluate_caps` and with the same
bookkeeping as `activities/contacts.py` (a reservation counts as pending; a refused send stops
counting). A simulated case sees only itself: another loan of the same borrower is not in it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contracts.activity_io import (
    ContactDecision,
    ContactRecord,
    ContactRequest,
    FollowUpInput,
    FollowUpResult,
    LegalInput,
    RecordBatch,
    SendInput,
    SendResult,
    TaskClose,
    TaskInput,
)
from policies import compliance
from workflows.case_state import SimulatedAttempt


def _for_caps(outcome: str | None) -> str:
    return outcome if outcome in ("connected", "pending", "unanswered") else "sent"


def reserve(attempts: list[SimulatedAttempt], req: ContactRequest) -> ContactDecision:
    """The decision `reserve_contact` would make on these attempts; a granted one is added
    (unless only checked, leaving out the attempt `exclude_key`)."""
    # Only attempts near `at` can count (a cap's period, the quiet days after a conversation, the
    # borrower's day): the rest are left out before the rules look, for speed alone.
    pack = req.rule_pack
    reach = timedelta(days=max([c.period_days for c in pack.caps]
                               + [pack.post_conversation_quiet_days, 1]) + 1)
    since, until = req.at - reach, req.at + timedelta(days=1)
    counted = [compliance.Attempt(at=a.at, channel=a.channel, loan_id=req.loan_id,
                                  contact_key=a.contact_key, outcome=a.outcome)
               for a in attempts if a.outcome != "failed" and a.key != req.exclude_key
               and since < a.at <= until]
    decision = compliance.evaluate_caps(
        req.rule_pack, channel=req.channel, at=req.at, tz=req.timezone, loan_id=req.loan_id,
        contact_key=req.contact_key,
        attempts=counted,
    )
    caps_left = compliance.caps_left(
        req.rule_pack, channel=req.channel, at=req.at, tz=req.timezone, loan_id=req.loan_id,
        contact_key=req.contact_key, attempts=counted,
    )
    if decision.allowed and not req.check_only:
        caps_left = {cap: max(0, n - 1) for cap, n in caps_left.items()}
        attempts.append(SimulatedAttempt(key=req.key, at=req.at, channel=req.channel,
                                         contact_key=req.contact_key, outcome="pending"))
    return ContactDecision(allowed=decision.allowed, rule=decision.rule, reason=decision.reason,
                           retry_at=decision.retry_at, caps_left=caps_left)


def record(attempts: list[SimulatedAttempt], rec: ContactRecord) -> None:
    """What writing `rec` to `contacts` does to the caps: set an attempt's outcome, or add one."""
    for a in attempts:
        if a.key == rec.key:
            if rec.decision in ("failed", "withdrawn"):  # not made: it stops counting
                a.outcome = "failed"
            elif rec.outcome is not None:
                a.outcome = _for_caps(rec.outcome)
            if rec.moved:
                a.at = rec.at
            return
    if rec.decision in ("sent", "breach"):
        attempts.append(SimulatedAttempt(key=rec.key, at=rec.at, channel=rec.channel,
                                         contact_key=rec.contact_key,
                                         outcome=_for_caps(rec.outcome)))


class SimulatedEffects:
    """The case's effects (workflows/effects.py) kept in memory: every send succeeds, and the caps
    count the attempts this case made."""

    writes_records = False

    def __init__(self, attempts: list[SimulatedAttempt]) -> None:
        self._attempts = attempts  # the case state's own list, so it survives continue-as-new

    async def reserve_contact(self, req: ContactRequest, *,
                              immediate: bool = False) -> ContactDecision:
        return reserve(self._attempts, req)

    def contact_decided(self, rec: ContactRecord) -> None:
        record(self._attempts, rec)

    def sent_records(self, batch: RecordBatch) -> None:
        for rec in batch.contacts:
            record(self._attempts, rec)

    def contacts_pending(self) -> bool:
        return False  # applied at once: there is nothing to write

    def take_contacts(self) -> list[ContactRecord]:
        return []

    def restore_contacts(self, contacts: list[ContactRecord]) -> None:
        return None

    def carry_with(self, carrier: Any) -> None:
        return None  # nothing is written, so nothing travels

    async def send(self, activity: str, inp: SendInput, send_timeout: timedelta) -> SendResult:
        return SendResult(status="sent")

    async def follow_up(self, activity: str, inp: FollowUpInput) -> FollowUpResult:
        """Staff confirm every WeCom message at once; nobody answers a voice reminder (as no
        agent answers a simulated call task)."""
        if inp.action == "cancel":
            return FollowUpResult("not_delivered", "failed", "simulated")
        if inp.channel == "voice":
            return FollowUpResult("not_delivered", "unanswered", "simulated")
        return FollowUpResult("delivered", "sent", "simulated")

    async def create_task(self, inp: TaskInput) -> None:
        return None  # no answer: the caps' reservation was made at once

    async def close_task(self, inp: TaskClose) -> None:
        return None

    async def record_legal_action(self, inp: LegalInput) -> None:
        return None

    async def add_contacts(self, batch: RecordBatch) -> None:
        return None

    async def write_records(self, batch: RecordBatch) -> None:
        return None  # the timeline is the record

    def upsert_search_attributes(self, updates: list[Any]) -> None:
        return None  # so simulated cases never show in `list`
