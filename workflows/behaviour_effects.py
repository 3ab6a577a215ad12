"""A case's effects played against a borrower-behaviour model: what each contact comes to is
drawn (workflows/behaviour.py), and everything the case writes goes to the effects it wraps.

Wrapping `SimulatedEffects` gives a simulation with a borrower (the lab, `policy simulate`);
wrapping `DurableEffects` gives a real case's records in PostgreSQL for a borrower who does not
exist (nothing is sent): a recorded history with known behaviour, for `lab fit` to learn from.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

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
    TaskCreated,
    TaskInput,
)
from contracts.behaviour import BehaviourModel, BorrowerAction
from workflows import behaviour
from workflows.case_state import CaseData

if TYPE_CHECKING:  # workflows/effects.py picks these effects: no import back at run time
    from workflows.carried_writes import Carrier
    from workflows.effects import CaseEffects

WRONG_NUMBER = "wrong_number"  # the provider's error code for a send that reached nobody
CALL_AFTER = timedelta(hours=1)  # from the start of a task's first allowed period to the call


class BehaviourEffects:
    """Sends and follow-ups answered by the draws; reservations, tasks and records delegated."""

    def __init__(self, inner: CaseEffects, s: CaseData, model: BehaviourModel) -> None:
        self._inner = inner
        self._s = s
        self._model = model
        self._granted: dict[str, ContactRequest] = {}  # attempt key -> its reservation
        self._answered: dict[str, bool] = {}  # outbox key -> a voice call answered
        self.writes_records = inner.writes_records

    async def reserve_contact(self, req: ContactRequest, *,
                              immediate: bool = False) -> ContactDecision:
        # At once: the sends it grants never reach the inner effects, so no reservation could
        # travel with them (workflows/carried_writes.py).
        decision = await self._inner.reserve_contact(req, immediate=True)
        if decision.allowed and not req.check_only:
            self._granted[req.key] = req
        return decision

    def contact_decided(self, rec: ContactRecord) -> None:
        self._inner.contact_decided(rec)

    def sent_records(self, batch: RecordBatch) -> None:
        # The send was drawn, not made: what was staged with it is pending for the inner effects.
        self._s.pending_events.extend(batch.events)
        self._s.snapshot_dirty = True
        for rec in batch.contacts:
            self._inner.contact_decided(rec)

    def contacts_pending(self) -> bool:
        return self._inner.contacts_pending()

    def take_contacts(self) -> list[ContactRecord]:
        return self._inner.take_contacts()

    def restore_contacts(self, contacts: list[ContactRecord]) -> None:
        self._inner.restore_contacts(contacts)

    def carry_with(self, carrier: Carrier) -> None:
        self._inner.carry_with(carrier)

    async def send(self, activity: str, inp: SendInput, send_timeout: timedelta) -> SendResult:
        """A ladder message (one the caps granted) meets the borrower; a notice just goes out."""
        req = self._granted.pop(inp.outbox_key, None)
        if req is None:
            return SendResult(status="sent", provider_id="simulated")
        s = self._s
        reaction, response = behaviour.react(self._model, s.seed, s.loan.loan_id, req.stage,
                                             inp.channel, req.at)
        if reaction.wrong_number:
            return SendResult(status="failed", error_code=WRONG_NUMBER, address_unusable=True)
        self._answered[inp.outbox_key] = reaction.answered
        if reaction.answered:
            behaviour.queue(s, behaviour.follow_on(s, response, reaction.action, req.at,
                                                   inp.outbox_key, f"{req.stage}/{inp.channel}"))
        return SendResult(status="sent", provider_id="simulated")

    async def follow_up(self, activity: str, inp: FollowUpInput) -> FollowUpResult:
        """A voice call is answered as drawn at its send; staff confirm WeCom messages at once."""
        if inp.action == "cancel":
            return FollowUpResult("not_delivered", "failed", "simulated")
        if inp.channel == "voice":
            if self._answered.get(inp.outbox_key, False):
                return FollowUpResult("delivered", "connected", "simulated")
            return FollowUpResult("not_delivered", "unanswered", "simulated")
        return FollowUpResult("delivered", "sent", "simulated")

    async def create_task(self, inp: TaskInput) -> TaskCreated | None:
        """The agent's call or visit: reached or not as drawn, reported within its first allowed
        period."""
        created = await self._inner.create_task(inp)
        s = self._s
        stage = s.stage.value
        reaction, _ = behaviour.react(self._model, s.seed, s.loan.loan_id, stage, inp.kind,
                                      inp.created_at)
        at = inp.created_at + CALL_AFTER
        if inp.work_windows:
            start, end = (datetime.fromisoformat(x) for x in inp.work_windows[0])
            at = max(start, inp.created_at) + min(CALL_AFTER, (end - max(start,
                                                                          inp.created_at)) / 2)
        behaviour.queue(s, [BorrowerAction(
            at=at, kind="task_outcome", key=inp.task_key,
            outcome=behaviour.task_outcome(inp.kind, reaction),
            then=reaction.action if reaction.answered else None, stage=stage,
            created=inp.created_at)])
        return created

    async def close_task(self, inp: TaskClose) -> None:
        await self._inner.close_task(inp)

    async def record_legal_action(self, inp: LegalInput) -> None:
        await self._inner.record_legal_action(inp)

    async def add_contacts(self, batch: RecordBatch) -> None:
        await self._inner.add_contacts(batch)

    async def write_records(self, batch: RecordBatch) -> None:
        await self._inner.write_records(batch)

    def upsert_search_attributes(self, updates: list[Any]) -> None:
        self._inner.upsert_search_attributes(updates)
