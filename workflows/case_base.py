"""The core every part of a case workflow shares: its state, policy time, and its record."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import date, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from policies import compliance
    from workflows import simulation
    from contracts.activity_io import (
        ContactRecord,
        EventRecord,
        StageChange,
    )
    from workflows.case_state import (
        CaseData,
        Notice,
    )
    from workflows.clock import PolicyClock
    from contracts.messages import (
        STAGE_ORDER,
        CaseState,
        Stage,
        TaskOutcome,
        TimelineEvent,
    )

CONNECTED = {TaskOutcome.REACHED, TaskOutcome.PROMISED, TaskOutcome.VISITED}
ESCALATING = {TaskOutcome.REFUSED, TaskOutcome.NOT_FOUND}

DB_OPTIONS: dict[str, Any] = {
    # Short: a write lost with a killed worker is retried after this long.
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
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



def _key(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:24]



class CaseBase:
    """State, policy time and the case's record: what every part of the workflow shares."""

    s: CaseData | None
    _wake: bool
    _sa: dict[str, Any]
    _contact_queue: list[ContactRecord]

    # ------------------------------------------------------------ database

    async def _db(self, name: str, arg: Any, *, result_type: type | None = None,
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

    def _queue_contact(self, rec: ContactRecord) -> None:
        """A contact decision for the next `record` batch; a simulation applies it to its caps."""
        assert self.s is not None
        if self.s.simulate:
            simulation.record(self.s.simulated_attempts, rec)
        else:
            self._contact_queue.append(rec)

    def _contacts_in_batch(self) -> bool:
        """Contact decisions travel in the `record` batch (else one `record_contact` each)."""
        return workflow.patched(DURABLE_WRITES_PATCH) or workflow.patched(LOCAL_DB_PATCH)

    # ---------------------------------------------------------------- time

    @property
    def _clock(self) -> PolicyClock:
        assert self.s is not None
        return PolicyClock(self.s.clock_origin, self.s.policy.settings.day_seconds)

    def _now(self) -> datetime:
        return self._clock.policy_time(workflow.now())

    def _today(self) -> date:
        assert self.s is not None
        return compliance.local(self._now(), self.s.loan.timezone).date()

    def _at_local(self, day: date, hour: int = 0) -> datetime:
        assert self.s is not None
        return compliance.step_instant(day, 0, hour, self.s.loan.timezone)

    def _dpd(self) -> int:
        assert self.s is not None
        return (self._today() - self.s.due_date).days

    def _stage_for_dpd(self) -> Stage:
        return Stage.PRE_DUE if self._dpd() <= 0 else Stage.EARLY

    async def _sleep_until(self, target: datetime | None, done: Any) -> bool:
        """Sleep (in policy time) until `target` or until `done()`; True if `done()` woke us."""
        if target is None:
            await workflow.wait_condition(done)
            return True
        delay = self._clock.real_delay(self._now(), target)
        if delay <= timedelta(0):
            return bool(done())
        try:
            await workflow.wait_condition(done, timeout=delay)
            return True
        except asyncio.TimeoutError:
            return False

    def _set_stage(self, stage: Stage) -> None:
        assert self.s is not None
        s = self.s
        if stage == s.stage or (stage in STAGE_ORDER and s.stage in STAGE_ORDER
                                and STAGE_ORDER.index(stage) < STAGE_ORDER.index(s.stage)):
            return
        s.pending_stage_changes.append(
            StageChange(self._next_key(), s.loan.loan_id, s.stage.value, stage.value, self._now())
        )
        self._event("stage_changed", f"stage {s.stage.value} -> {stage.value}")
        s.stage = stage

    def _notify(self, template: str, channels: list[str], extra: dict[str, str]) -> None:
        assert self.s is not None
        self.s.pending_notices.append(Notice(key=f"{template}-{self.s.seq}", template=template,
                                             channels=channels, extra=extra))

    def _close(self, state: CaseState, reason: str, *, actor: str | None = None) -> None:
        assert self.s is not None
        s = self.s
        if not s.active:
            return
        s.state = state
        s.close_reason = reason
        s.closed_at = self._now()
        self._event("case_closed", f"case closed: {state.value} ({reason})", actor=actor)
        self._wake = True

    def _next_key(self) -> str:
        assert self.s is not None
        self.s.seq += 1
        return f"{self.s.loan.loan_id}/{self.s.seq}"

    def _event(self, kind: str, summary: str, *, rule: str | None = None, actor: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
        assert self.s is not None
        s = self.s
        at = self._now()
        s.timeline.append(TimelineEvent(at=at, kind=kind, summary=summary, rule=rule, actor=actor,
                                        detail=detail or {}))
        s.pending_events.append(EventRecord(key=self._next_key(), loan_id=s.loan.loan_id, kind=kind,
                                            summary=summary, occurred_at=at, actor=actor, rule=rule,
                                            detail=detail or {}))
        s.snapshot_dirty = True

