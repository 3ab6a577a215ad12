"""A case: its state, its policy time and its record, which every layer above writes through.

Pure: the runtime is passed in (workflows/runtime.py: the workflow's, or the lab's virtual one),
so the same case runs without a server. Recording an event here is a change of state; writing it
out is the recorder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from contracts.activity_io import EventRecord, StageChange
from contracts.behaviour import BehaviourModel
from contracts.messages import CaseState, LoanInput, Stage, TimelineEvent
from contracts.policy import ResolvedPolicy, Step
from policies import compliance
from workflows import ladder
from workflows.addresses import borrower_key
from workflows.case_state import CaseData, Notice
from workflows.clock import PolicyClock
from workflows.ledger import balance_of
from workflows.runtime import CaseRuntime


@dataclass
class StagedEvent:
    record: EventRecord
    timeline: TimelineEvent


class Case:
    def __init__(self, s: CaseData, runtime: CaseRuntime) -> None:
        self.s = s
        self.runtime = runtime
        self.real_now = runtime.now
        # Set by whatever should make the run loop look again (a payment, an update, a close).
        self.wake = False
        # Whether its writes travel with its actions (workflows/carried_writes.py): set when its
        # run starts.
        self.carry = False
        self.notice_checks_travel = False  # NOTICE_CHECK_PATCH, asked with CARRY_PATCH
        self._today: tuple[datetime, date] | None = None

    @classmethod
    def open(cls, loan: LoanInput, policy: ResolvedPolicy, runtime: CaseRuntime, *,
             simulate: bool = False, behaviour: BehaviourModel | None = None,
             seed: int = 0) -> Case:
        now = runtime.now()
        balance = balance_of(loan.amount_overdue, loan.interest, loan.fees)
        case = cls(CaseData(
            loan=loan, policy=policy, clock_origin=now, opened_at=now, due_date=loan.due_date,
            principal=balance.principal, interest=balance.interest, fees=balance.fees,
            borrower_key=borrower_key(loan), simulate=simulate,
            # A landline or toll-free phone: SMS unusable from the start (service.loan_file).
            unusable=dict(loan.unusable_channels), behaviour=behaviour, seed=seed,
        ), runtime)
        s = case.s
        s.stage = case.stage_for_dpd()
        case.event(
            "case_opened",
            f"{'simulated ' if simulate else ''}case opened under policy "
            f"{policy.name} {policy.version}, "
            f"segment {policy.segment}, "
            f"ladder {policy.ladder_name}, rule pack {policy.rule_pack.name}",
            detail={"amount": str(loan.amount_overdue), "currency": loan.currency},
        )
        s.pending_stage_changes.append(
            StageChange(case.next_key(), loan.loan_id, None, s.stage.value, case.now())
        )
        return case

    # ---------------------------------------------------------------- time

    @property
    def clock(self) -> PolicyClock:
        return PolicyClock(self.s.clock_origin, self.s.policy.settings.day_seconds)

    def now(self) -> datetime:
        s = self.s
        if s.behaviour is not None:
            # A case played against a behaviour model runs on its own instants: the one it opened
            # at (in whole seconds), then each its timers were set for. A server wakes a workflow
            # some real milliseconds (more under load) after a timer's instant, the lab
            # (workflows/virtual_loop.py) at the instant; both must see the same time and draws.
            if s.instant is None:
                s.instant = self.exact_now().replace(microsecond=0)
            return s.instant
        return self.exact_now()

    def exact_now(self) -> datetime:
        """Policy time by the runtime's clock: what a timer's length is measured from."""
        return self.clock.policy_time(self.real_now())

    def reached(self, target: datetime) -> None:
        """A timer set for `target` has fired (or its instant has passed)."""
        s = self.s
        if s.behaviour is not None and (s.instant is None or target > s.instant):
            s.instant = target

    def today(self) -> date:
        now = self.now()
        if self._today is None or self._today[0] != now:  # asked many times an instant
            self._today = (now, compliance.local(now, self.s.loan.timezone).date())
        return self._today[1]

    def at_local(self, day: date, hour: int = 0) -> datetime:
        return compliance.step_instant(day, 0, hour, self.s.loan.timezone)

    def dpd(self) -> int:
        return (self.today() - self.s.due_date).days

    def stage_for_dpd(self) -> Stage:
        return Stage.PRE_DUE if self.dpd() <= 0 else Stage.EARLY

    # -------------------------------------------------------------- record

    def next_key(self) -> str:
        self.s.seq += 1
        return f"{self.s.loan.loan_id}/{self.s.seq}"

    def event(self, kind: str, summary: str, *, rule: str | None = None, actor: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        self.note(self.staged_event(kind, summary, rule=rule, actor=actor, detail=detail))

    def note(self, staged: StagedEvent) -> None:
        """A staged event happened, and its record is to be written."""
        self.s.pending_events.append(staged.record)
        self.s.snapshot_dirty = True
        self.happened(staged)

    def staged_event(self, kind: str, summary: str, *, rule: str | None = None,
                     actor: str | None = None, detail: dict[str, Any] | None = None) -> StagedEvent:
        """An event that has not happened yet: written with the action it would follow, if that
        action succeeds (workflows/carried_writes.py), and then `happened`."""
        s = self.s
        at = self.now()
        return StagedEvent(
            record=EventRecord(key=self.next_key(), loan_id=s.loan.loan_id, kind=kind,
                               summary=summary, occurred_at=at, actor=actor, rule=rule,
                               detail=detail or {}),
            timeline=TimelineEvent(at=at, kind=kind, summary=summary, rule=rule, actor=actor,
                                   detail=detail or {}))

    def happened(self, staged: StagedEvent) -> None:
        """A staged event is part of the case now (its record pending, or written with its
        action)."""
        self.s.timeline.append(staged.timeline)

    def set_stage(self, stage: Stage) -> None:
        s = self.s
        if not ladder.stage_moves_to(s.stage, stage):
            return
        s.pending_stage_changes.append(
            StageChange(self.next_key(), s.loan.loan_id, s.stage.value, stage.value, self.now())
        )
        self.event("stage_changed", f"stage {s.stage.value} -> {stage.value}")
        s.stage = stage

    def notify(self, template: str, channels: list[str], extra: dict[str, str]) -> None:
        """Owe the borrower a message outside the ladder (a receipt, a confirmation)."""
        self.s.pending_notices.append(Notice(key=f"{template}-{self.s.seq}", template=template,
                                             channels=channels, extra=extra))

    def close(self, state: CaseState, reason: str, *, actor: str | None = None) -> None:
        s = self.s
        if not s.active:
            return
        s.state = state
        s.close_reason = reason
        s.closed_at = self.now()
        self.event("case_closed", f"case closed: {state.value} ({reason})", actor=actor)
        self.wake = True

    # -------------------------------------------------------------- ladder

    def skip(self, step_id: str, why: str) -> None:
        self.s.done_steps.append(step_id)
        self.event("step_skipped", f"step {step_id} skipped: {why}", detail={"step": step_id})

    def take_due_step(self, now: datetime) -> Step | None:
        """The step to run now, with the steps passed over recorded as skipped."""
        due = ladder.due_step(self.s, now)
        for k in due.skips:
            self.skip(k.step.id, k.why)
        return due.step

    def escalate(self, why: str) -> None:
        """Jump to the first step of the next stage, recording the steps passed over."""
        esc = ladder.escalation(self.s)
        if esc is None:
            return
        for st in esc.skipped:
            self.skip(st.id, f"escalated: {why}")
        self.s.pull_forward.append(esc.target.id)
        self.event("escalated", f"escalated to {esc.target.stage.value}: {why}",
                   detail={"step": esc.target.id})
