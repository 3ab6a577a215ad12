"""What a case does to the world, chosen once when it opens: durable activities or a simulation.

The case code above this module never asks whether it is simulated; it calls the effects it was
given. `DurableEffects` runs activities by the names in `contracts/activity_io.py`;
`workflows.simulation.SimulatedEffects` keeps everything in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import (
        CLOSE_TASK,
        CREATE_TASK,
        RECORD,
        RECORD_CONTACT,
        RECORD_LEGAL_ACTION,
        RESERVE_CONTACT,
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
    from workflows.behaviour_effects import BehaviourEffects
    from workflows.carried_writes import Carrier, provisional
    from workflows.case_state import CaseData
    from workflows.simulation import SimulatedEffects

T = TypeVar("T")
DB_OPTIONS: dict[str, Any] = {
    # Short: a write lost with a killed worker is retried after this long.
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1),
                                maximum_interval=timedelta(minutes=1)),
}
# How a case runs its database activities, pinned per execution by patch markers:
# - before LOCAL_DB_PATCH: all regular activities, contact decisions through `record_contact`;
# - LOCAL_DB_PATCH alone: all local activities (executions started between the two patches);
# - DURABLE_WRITES_PATCH (current): writes are regular activities again, because a local
#   activity commits before the workflow task that decided it: a worker killed mid-task leaves
#   that write behind while the re-run task (later, so maybe deciding otherwise) writes its own,
#   a step recorded as started that was skipped, or an agent task for a call never made. An
#   activity is only scheduled from a decision the server has. The read-only `resolve_policy`
#   stays local; contact decisions stay inside the `record` batch.
LOCAL_DB_PATCH = "db-activities-local"
DURABLE_WRITES_PATCH = "db-writes-from-committed-decisions"
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["UnknownTemplateError", "UndefinedError"],
)

# A provider's follow-up (contracts/channels.py `follow_up`): a call still ringing is retried
# until it ends; the whole wait is bounded, after which the case records the outcome as unknown.
FOLLOW_UP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["ProviderRefused"],
)
FOLLOW_UP_WITHIN = timedelta(hours=1)


class CaseEffects(Protocol):
    """Every side effect a case has. Contact decisions are noted as they are made and travel
    with the next record batch."""

    # False: nothing the recorder would write goes anywhere (a simulation), so it builds no batch.
    writes_records: bool

    async def reserve_contact(self, req: ContactRequest, *,
                              immediate: bool = False) -> ContactDecision:
        """The caps' answer; with writes carried (carry_with) and not `immediate`, a provisional
        one, the reservation going with the send or task of the same key."""
        ...

    def contact_decided(self, rec: ContactRecord) -> None: ...

    def sent_records(self, batch: RecordBatch) -> None:
        """A send went out: what was staged to go with it (SendInput.on_sent) is written, or is
        now pending where the send did not write it."""
        ...

    def contacts_pending(self) -> bool: ...

    def take_contacts(self) -> list[ContactRecord]: ...

    def restore_contacts(self, contacts: list[ContactRecord]) -> None: ...

    def carry_with(self, carrier: Carrier) -> None:
        """From now on the pending writes travel with the actions (workflows/carried_writes.py)."""
        ...

    async def send(self, activity: str, inp: SendInput, send_timeout: timedelta) -> SendResult: ...

    async def follow_up(self, activity: str, inp: FollowUpInput) -> FollowUpResult: ...

    async def create_task(self, inp: TaskInput) -> TaskCreated | None:
        """None where nothing is created (a simulation) or the answer was not asked for."""
        ...

    async def close_task(self, inp: TaskClose) -> None: ...

    async def record_legal_action(self, inp: LegalInput) -> None: ...

    async def add_contacts(self, batch: RecordBatch) -> None:
        """Put the contact decisions noted so far into `batch` (or write them ahead of it)."""
        ...

    async def write_records(self, batch: RecordBatch) -> None: ...

    def upsert_search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None: ...


async def run_db(name: str, arg: Any, *, result_type: type | None = None,
                 start_to_close_timeout: timedelta | None = None, read_only: bool = False) -> Any:
    """Run a database activity the way this execution runs them (see DURABLE_WRITES_PATCH)."""
    options = dict(DB_OPTIONS)
    if start_to_close_timeout is not None:
        options["start_to_close_timeout"] = start_to_close_timeout
    if workflow.patched(DURABLE_WRITES_PATCH):
        local = read_only
    else:
        local = workflow.patched(LOCAL_DB_PATCH)
    if local:
        return await workflow.execute_local_activity(name, arg, result_type=result_type, **options)
    return await workflow.execute_activity(name, arg, result_type=result_type, **options)


class DurableEffects:
    """Activities: sends through the outbox, the caps' reservation and the records in PostgreSQL."""

    writes_records = True

    def __init__(self) -> None:
        self._contacts: list[ContactRecord] = []
        self._carrier: Carrier | None = None
        self._reservations: dict[str, ContactRequest] = {}  # key -> to go with its action

    async def reserve_contact(self, req: ContactRequest, *,
                              immediate: bool = False) -> ContactDecision:
        # Checks travel too (NOTICE_CHECK_PATCH); a caller that needs the answer now, or a run
        # from before that patch, asks `immediate`.
        if self._carrier is not None and not immediate:
            self._reservations[req.key] = req
            return provisional()
        decision: ContactDecision = await run_db(RESERVE_CONTACT, req, result_type=ContactDecision)
        return decision

    def contact_decided(self, rec: ContactRecord) -> None:
        self._contacts.append(rec)

    def sent_records(self, batch: RecordBatch) -> None:
        return None  # the send activity wrote them

    def contacts_pending(self) -> bool:
        return bool(self._contacts)

    def take_contacts(self) -> list[ContactRecord]:
        contacts, self._contacts = self._contacts, []
        return contacts

    def restore_contacts(self, contacts: list[ContactRecord]) -> None:
        self._contacts[:0] = contacts

    def carry_with(self, carrier: Carrier) -> None:
        self._carrier = carrier

    async def _carrying(self, inp: SendInput | TaskInput | TaskClose | LegalInput,
                        run: Callable[[], Awaitable[T]]) -> T:
        """Run one action with the pending writes in its input: pending again if it fails, the
        search attributes brought up to date once they are written."""
        carrier = self._carrier
        if carrier is None:
            return await run()
        batch = carrier.take()
        inp.records = batch
        try:
            result = await run()
        except BaseException:
            carrier.restore(batch)
            raise
        if batch is not None:
            carrier.written()
        return result

    async def send(self, activity: str, inp: SendInput, send_timeout: timedelta) -> SendResult:
        if self._carrier is not None:
            inp.reserve = self._reservations.pop(inp.outbox_key, None)

        async def run() -> SendResult:
            result: SendResult = await workflow.execute_activity(
                activity, inp, result_type=SendResult, start_to_close_timeout=send_timeout,
                retry_policy=SEND_RETRY,
            )
            return result

        return await self._carrying(inp, run)

    async def follow_up(self, activity: str, inp: FollowUpInput) -> FollowUpResult:
        result: FollowUpResult = await workflow.execute_activity(
            activity, inp, result_type=FollowUpResult,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=FOLLOW_UP_WITHIN, retry_policy=FOLLOW_UP_RETRY,
        )
        return result

    async def create_task(self, inp: TaskInput) -> TaskCreated | None:
        if self._carrier is None:
            await run_db(CREATE_TASK, inp)
            return None
        inp.reserve = self._reservations.pop(inp.task_key, None)

        async def run() -> TaskCreated:
            created: TaskCreated = await run_db(CREATE_TASK, inp, result_type=TaskCreated)
            return created

        return await self._carrying(inp, run)

    async def close_task(self, inp: TaskClose) -> None:
        await self._carrying(inp, lambda: run_db(CLOSE_TASK, inp))

    async def record_legal_action(self, inp: LegalInput) -> None:
        await self._carrying(inp, lambda: run_db(RECORD_LEGAL_ACTION, inp))

    async def add_contacts(self, batch: RecordBatch) -> None:
        contacts, self._contacts = self._contacts, []
        # Contact decisions travel in the `record` batch (else one `record_contact` each).
        if workflow.patched(DURABLE_WRITES_PATCH) or workflow.patched(LOCAL_DB_PATCH):
            batch.contacts = contacts
        else:
            for rec in contacts:
                await workflow.execute_activity(RECORD_CONTACT, rec, **DB_OPTIONS)

    async def write_records(self, batch: RecordBatch) -> None:
        await run_db(RECORD, batch)

    def upsert_search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        workflow.upsert_search_attributes(updates)


def effects_for(s: CaseData) -> CaseEffects:
    """The one place the mode is read: a simulated case (from `CollectionInput.simulate`, kept in
    its state through continue-as-new) gets in-memory effects; a case played against a behaviour
    model (`CollectionInput.behaviour`) gets its borrower's answers drawn, around either."""
    effects: CaseEffects = (SimulatedEffects(s.simulated_attempts) if s.simulate
                            else DurableEffects())
    if s.behaviour is not None:
        return BehaviourEffects(effects, s, s.behaviour)
    return effects
