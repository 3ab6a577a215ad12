"""When the demo stops waiting for its cases, and what it says when it gives up.

The demo waits as long as cases make progress: any case whose state, stage, days past due,
balance, contact counts or next action changed counts. It gives up only when no case has changed
for `stall_seconds` (or after `max_seconds` in all), and then names each unfinished case, its
stage and what it is waiting for. Pure: statuses in, decisions and text out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.messages import CaseState, CaseStatus

END_STATES = frozenset({CaseState.PAID, CaseState.SETTLED, CaseState.WRITTEN_OFF,
                        CaseState.CLOSED})


def fingerprint(status: CaseStatus | None) -> tuple[Any, ...] | None:
    """What changes when a case makes progress."""
    if status is None:
        return None
    return (status.state, status.stage, status.days_past_due, status.outstanding,
            tuple(sorted(status.contact_counts.items())), status.next_action,
            status.next_action_at)


def finished(status: CaseStatus | None) -> bool:
    return status is not None and status.state in END_STATES


@dataclass
class Progress:
    """Feed it each round of statuses with the time; it says whether to keep waiting."""

    stall_seconds: float
    max_seconds: float
    started: float
    last_change: float = field(init=False)
    _seen: dict[str, tuple[Any, ...] | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.last_change = self.started

    def observe(self, statuses: Mapping[str, CaseStatus | None], now: float) -> None:
        current = {loan_id: fingerprint(st) for loan_id, st in statuses.items()}
        if current != self._seen:
            self.last_change = now
        self._seen = current

    def all_finished(self, statuses: Mapping[str, CaseStatus | None]) -> bool:
        return bool(statuses) and all(finished(st) for st in statuses.values())

    def stalled_for(self, now: float) -> float:
        return now - self.last_change

    def give_up(self, now: float) -> bool:
        return (self.stalled_for(now) > self.stall_seconds
                or now - self.started > self.max_seconds)


def waiting_for(status: CaseStatus | None, no_status: str | None = None) -> str:
    if status is None:
        return f"no status: {no_status or 'its workflow did not answer the status query'}"
    if status.next_action is None:
        return "nothing scheduled (an agent's answer, a payment or a deadline)"
    at = f" at {status.next_action_at:%Y-%m-%d %H:%M} UTC" if status.next_action_at else ""
    return f"{status.next_action}{at}"


def give_up_message(statuses: Mapping[str, CaseStatus | None], *, stalled_for: float,
                    elapsed: float, day_seconds: float,
                    no_status: Mapping[str, str] | None = None) -> str:
    """One line for the stop, then one per unfinished case: loan, state, stage, what it awaits.
    `no_status`: for a case without a status, what is known instead (its workflow's state)."""
    unfinished = {loan_id: st for loan_id, st in statuses.items() if not finished(st)}
    lines = [f"{len(unfinished)} of {len(statuses)} cases did not reach an end state: none "
             f"changed in the last {stalled_for:.0f} s ({stalled_for / day_seconds:.0f} policy "
             f"days), {elapsed:.0f} s after the demo started."]
    for loan_id, st in sorted(unfinished.items()):
        where = f"{st.state.value} at stage {st.stage.value}, day {st.days_past_due}" if st \
            else "state unknown"
        reason = (no_status or {}).get(loan_id)
        lines.append(f"  {loan_id}: {where}; waiting for {waiting_for(st, reason)}")
    return "\n".join(lines)
