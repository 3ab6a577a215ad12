"""Ladder decisions: which step is due, when the next one is, where an escalation lands.

Pure functions of the case state and the policy time: they return decisions and never record
them (workflows/case.py does), so the same decisions can run without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from contracts.messages import STAGE_ORDER, Stage
from contracts.policy import Step
from policies import compliance
from workflows.case_state import CaseData


@dataclass
class Skip:
    step: Step
    why: str


@dataclass
class DueStep:
    """The step to run now (if any) and the steps passed over on the way, in the order decided."""

    step: Step | None
    skips: list[Skip] = field(default_factory=list)


@dataclass
class Escalation:
    target: Step
    skipped: list[Step]


def step_time(s: CaseData, step: Step) -> datetime:
    return compliance.step_instant(s.due_date, step.day, step.hour, s.loan.timezone)


def applies(s: CaseData, step: Step) -> bool:
    """Balance bounds are checked when a step comes due, against the balance then."""
    if step.min_outstanding is not None and s.outstanding < step.min_outstanding:
        return False
    return step.max_outstanding is None or s.outstanding < step.max_outstanding


def due_step(s: CaseData, now: datetime) -> DueStep:
    """The step to run at `now`: a step outside its balance bounds is skipped, and of timed steps
    due together only the latest runs (the earlier ones are superseded)."""
    done = set(s.done_steps)
    due = [st for st in s.policy.steps
           if st.id not in done and (st.id in s.pull_forward or step_time(s, st) <= now)]
    skips = [Skip(st, f"balance {s.outstanding} outside the step's bounds")
             for st in due if not applies(s, st)]
    done |= {k.step.id for k in skips}
    due = [st for st in due if st.id not in done]
    timed = [st for st in due if st.id not in s.pull_forward]
    if len(due) > 1 and timed:
        latest = max(step_time(s, st) for st in timed)
        superseded = [Skip(st, "superseded by a later step that is already due")
                      for st in timed if step_time(s, st) < latest]
        skips += superseded
        done |= {k.step.id for k in superseded}
        due = [st for st in due if st.id not in done]
    return DueStep(due[0] if due else None, skips)


def next_step_time(s: CaseData) -> datetime | None:
    times = [step_time(s, st) for st in s.policy.steps if st.id not in s.done_steps]
    return min(times) if times else None


def next_step(s: CaseData) -> Step | None:
    """The pending step that comes soonest (for status: what the case will do next)."""
    pending = [st for st in s.policy.steps if st.id not in s.done_steps]
    return min(pending, key=lambda st: step_time(s, st)) if pending else None


def escalation(s: CaseData) -> Escalation | None:
    """The first step of a later stage than the case's, and the steps before it to pass over."""
    rank = STAGE_ORDER.index(s.stage) if s.stage in STAGE_ORDER else 0
    remaining = [st for st in s.policy.steps if st.id not in s.done_steps]
    at = next((i for i, st in enumerate(remaining) if STAGE_ORDER.index(st.stage) > rank), None)
    if at is None:
        return None
    return Escalation(remaining[at], remaining[:at])


def stage_moves_to(current: Stage, stage: Stage) -> bool:
    """Stages only move forward along STAGE_ORDER; `closed` (outside it) can always be entered."""
    if stage == current:
        return False
    return not (stage in STAGE_ORDER and current in STAGE_ORDER
                and STAGE_ORDER.index(stage) < STAGE_ORDER.index(current))
