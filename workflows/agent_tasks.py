"""An agent's call or field visit: the task is created, waited on, withdrawn or closed with its
outcome, and the call recorded inside the rules or as a breach.

Before a task is created the contact goes through the message path's checks (cease, unusable
addresses, the window and the caps: workflows/contacts.py), which this module calls and which
never calls back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activity_io import (
        ContactDecision,
        ContactRecord,
        ContactRequest,
        RecordBatch,
        TaskClose,
        TaskInput,
    )
    from contracts.messages import TaskOutcome
    from contracts.policy import Step
    from policies import compliance
    from workflows import addresses
    from workflows.case_state import OpenTask
    from workflows.contacts import CaseContacts, Clearance
    from workflows.timers import sleep_until
    from workflows.withdrawals import withdrawal

CONNECTED = {TaskOutcome.REACHED.value, TaskOutcome.PROMISED.value, TaskOutcome.VISITED.value}
ESCALATING = {TaskOutcome.REFUSED.value, TaskOutcome.NOT_FOUND.value}
# Executions from before this patch create a task due a fixed time after it is created, record
# the call when the task closes (the row keeps the creation time), accept any outcome and cancel
# the task only on a cease or the case's end. Since it, a task carries when it may be worked
# (the allowed periods in its span, due by the end of the last one, the caps left), the call is
# recorded at the time the agent reports and checked against the window and caps then (a breach
# is still recorded, as one), and a hold, a dispute, a cease or the case's end withdraws it.
TASK_RULES_PATCH = "agent-tasks-within-rules"
# Rule codes of the decisions no rule pack makes.
CLOSED_RULE = "case.closed"
NO_OUTCOME_RULE = "case.no_outcome_by_deadline"


class AgentTasks:
    """Calls and visits of one case, within its rule pack, through its message path's checks."""

    def __init__(self, contacts: CaseContacts) -> None:
        self.contacts = contacts
        self.case = contacts.case
        self.effects = contacts.effects
        self.workflow_id = contacts.workflow_id

    async def task(self, step: Step) -> None:
        """An agent's call or visit: a task with a deadline, then its outcome."""
        case, s = self.case, self.case.s
        kind = step.kind
        task_key = f"{self.workflow_id}/{step.id}"
        if self.contacts.blocked(step, step.id, kind, task_key):
            return
        await self.contacts.validation_notice_first()  # a call or visit is a communication too
        refused: ContactDecision | None = None
        while True:
            clearance = await self.contacts.clear_to_contact(step.id, kind, task_key, None,
                                                             refused=refused)
            if clearance is not Clearance.CLEAR:
                return
            if not case.runtime.patched(TASK_RULES_PATCH):
                break
            # A reservation that travelled with the task and was refused: deferred as if asked
            # before it (workflows/carried_writes.py).
            refused = await self._task_within_rules(step, task_key)
            if refused is None:
                return
        settings = s.policy.settings
        days = step.deadline_days or (
            settings.call_deadline_days if kind == "call" else settings.visit_deadline_days)
        now = case.now()
        due_by = now + timedelta(days=days)
        await self.effects.create_task(
            TaskInput(task_key=task_key, loan_id=s.loan.loan_id, workflow_id=self.workflow_id,
                      kind=kind, step_id=step.id, priority=step.priority, due_by=due_by,
                      created_at=now),
        )
        task = OpenTask(task_key=task_key, kind=kind, step_id=step.id, contact_key=task_key,
                        due_by=due_by)
        s.open_task = task
        s.contact_counts[kind] = s.contact_counts.get(kind, 0) + 1
        case.event("task_created", f"{kind} task created, due by {due_by:%Y-%m-%d %H:%M} UTC",
                   detail={"task_key": task_key, "step": step.id})
        # A cease request withdraws the task at once: no agent may call or visit after it.
        await sleep_until(case, due_by,
                          lambda: task.outcome is not None or not s.active or s.ceased)
        s.open_task = None
        if task.outcome is None and (not s.active or s.ceased):
            outcome, status = "cancelled", "cancelled"
        else:
            outcome = task.outcome or TaskOutcome.DEADLINE_MISSED.value
            status = "done" if task.outcome else "expired"
        await self.effects.close_task(
            TaskClose(task_key=task_key, status=status, outcome=outcome, completed_at=case.now(),
                      agent=task.agent, note=task.note),
        )
        self.effects.contact_decided(ContactRecord(
            key=task_key, loan_id=s.loan.loan_id, borrower_key=s.borrower_key,
            contact_key=addresses.contact_key(s.loan, kind), channel=kind, step_id=step.id,
            stage=s.stage.value, decision="sent", at=case.now(),
            rule=f"{s.policy.rule_pack.name}.window_and_caps",
            outcome="connected" if outcome in CONNECTED else "unanswered",
        ))
        case.event("task_outcome", f"{kind} outcome: {outcome}", actor=task.agent,
                   detail={"task_key": task_key, "outcome": outcome})
        if outcome == TaskOutcome.WRONG_NUMBER.value:
            s.mark_unusable("phone", "wrong number reported by an agent")
        elif outcome in ESCALATING and s.active:
            case.escalate(f"{kind} outcome {outcome}")

    def withdraw_reason(self) -> tuple[str, str] | None:
        """(rule, why) an open call or visit is withdrawn now, or None if it may go on."""
        s = self.case.s
        if not s.active:
            return CLOSED_RULE, f"case closed ({s.state.value})"
        return withdrawal(s)

    async def _task_within_rules(self, step: Step, task_key: str) -> ContactDecision | None:
        """The task path since TASK_RULES_PATCH (see there); the caps' answer if they refused
        the reservation that went with the task (nothing was created)."""
        case, s = self.case, self.case.s
        kind, pack, tz = step.kind, s.policy.rule_pack, s.loan.timezone
        settings = s.policy.settings
        days = step.deadline_days or (
            settings.call_deadline_days if kind == "call" else settings.visit_deadline_days)
        now = case.now()
        periods = compliance.allowed_periods(now, now + timedelta(days=days), tz, pack)
        # Due by the end of the last allowed period in its span: never in the borrower's night.
        due_by = periods[-1][1] if periods else now + timedelta(days=days)
        granted = self.contacts.last_decision
        caps_left = dict(granted.caps_left) if granted is not None else {}
        window = f"{pack.window_start:%H:%M}-{pack.window_end:%H:%M}"
        summary = (f"{kind} task created, due by {due_by:%Y-%m-%d %H:%M} UTC; may be worked "
                   f"{window} local ({tz})")
        detail: dict[str, Any] = {"task_key": task_key, "step": step.id, "window": window}
        # Since CARRY_PATCH the task's record goes with it, written before the caps' room is
        # known: that room is on the task row (caps_left), not in the event.
        staged = case.staged_event("task_created", summary, rule=f"{pack.name}.window_and_caps",
                                   detail=detail) if case.carry else None
        created = await self.effects.create_task(TaskInput(
            task_key=task_key, loan_id=s.loan.loan_id, workflow_id=self.workflow_id, kind=kind,
            step_id=step.id, priority=step.priority, due_by=due_by, created_at=now,
            timezone=tz, window_start=f"{pack.window_start:%H:%M}",
            window_end=f"{pack.window_end:%H:%M}",
            work_windows=[[a.isoformat(), b.isoformat()] for a, b in periods],
            caps_left=caps_left, rule_pack=pack.name,
            on_created=RecordBatch(events=[staged.record]) if staged is not None else None,
        ))
        if created is not None and created.decision is not None and not created.decision.allowed:
            return created.decision
        task = OpenTask(task_key=task_key, kind=kind, step_id=step.id, contact_key=task_key,
                        due_by=due_by, created_at=now, withdraws_on_hold=True)
        s.open_task = task
        s.contact_counts[kind] = s.contact_counts.get(kind, 0) + 1
        if staged is not None:
            case.happened(staged)
        else:
            caps = ", ".join(f"{cap} {n} left" for cap, n in caps_left.items())
            case.event("task_created", f"{summary}{'; ' + caps if caps else ''}",
                       rule=f"{pack.name}.window_and_caps",
                       detail={**detail, "caps_left": caps_left})
        await sleep_until(case, due_by,
                          lambda: task.outcome is not None or self.withdraw_reason() is not None)
        s.open_task = None
        withdrawn = self.withdraw_reason() if task.outcome is None else None
        if withdrawn is not None:
            await self._withdraw(step, task, *withdrawn)
            return None
        if task.outcome is None:
            await self._no_outcome(step, task)
            return None
        await self._outcome(step, task)
        return None

    async def _close(self, close: TaskClose, noted: Callable[[], None]) -> None:
        """Close the task; `noted` records what its closing decided. Since CARRY_PATCH those
        records are noted first, so that they go with the close (workflows/carried_writes.py)."""
        if self.case.carry:
            noted()
            await self.effects.close_task(close)
        else:
            await self.effects.close_task(close)
            noted()

    async def _withdraw(self, step: Step, task: OpenTask, rule: str, why: str) -> None:
        case, s = self.case, self.case.s
        s.withdrawn_tasks[task.task_key] = why

        def noted() -> None:
            # The attempt reserved for it was never made: it stops counting towards the caps.
            self._contact_row(step, "withdrawn", at=case.now(), rule=rule,
                              reason=f"task withdrawn: {why}", outcome=None)
            case.event("task_withdrawn", f"{task.kind} task withdrawn: {why}", rule=rule,
                       detail={"task_key": task.task_key, "step": step.id, "reason": why})

        await self._close(TaskClose(
            task_key=task.task_key, status="withdrawn", outcome="withdrawn",
            completed_at=case.now(), reason=why), noted)

    async def _no_outcome(self, step: Step, task: OpenTask) -> None:
        case = self.case
        outcome = TaskOutcome.DEADLINE_MISSED.value

        def noted() -> None:
            self._contact_row(step, "sent", at=case.now(), rule=NO_OUTCOME_RULE,
                              outcome="unanswered",
                              reason="no outcome reported by the task's deadline", moved=False)
            case.event("task_outcome", f"{task.kind} outcome: {outcome}", rule=NO_OUTCOME_RULE,
                       detail={"task_key": task.task_key, "outcome": outcome})

        await self._close(TaskClose(
            task_key=task.task_key, status="expired", outcome=outcome, completed_at=case.now()),
            noted)

    async def _outcome(self, step: Step, task: OpenTask) -> None:
        """An outcome reported: the call is recorded when it happened, inside the rules or as a
        breach of the rule it broke."""
        case, s = self.case, self.case.s
        kind, pack, tz = task.kind, s.policy.rule_pack, s.loan.timezone
        outcome = task.outcome or TaskOutcome.DEADLINE_MISSED.value
        at = task.at or case.now()
        local_at = compliance.local(at, tz)
        breach = compliance.window_check(at, tz, pack)
        reason = ""
        if breach is not None:
            reason = (f"{kind} at {local_at:%Y-%m-%d %H:%M} local, outside the "
                      f"{pack.window_start:%H:%M}-{pack.window_end:%H:%M} window")
        elif self._capped(kind):
            decision = await self.effects.reserve_contact(ContactRequest(
                key=f"{task.task_key}/at-call", loan_id=s.loan.loan_id,
                borrower_key=s.borrower_key, contact_key=addresses.contact_key(s.loan, kind),
                channel=kind, step_id=step.id, stage=s.stage.value, template=None, at=at,
                timezone=tz, rule_pack=pack, check_only=True, exclude_key=task.task_key,
            ), immediate=True)
            if not decision.allowed:
                breach = decision.rule or f"{pack.name}.caps"
                reason = f"{kind} at {local_at:%Y-%m-%d %H:%M} local over a cap: {decision.reason}"
        rule = breach or f"{pack.name}.window_and_caps"

        def noted() -> None:
            self._contact_row(
                step, "breach" if breach else "sent", at=at, rule=rule,
                outcome="connected" if outcome in CONNECTED else "unanswered",
                reason=reason or f"{kind} at {local_at:%Y-%m-%d %H:%M} local, within the "
                                 f"{pack.name} window and caps")
            case.event("task_outcome", f"{kind} outcome: {outcome}", actor=task.agent, rule=rule,
                       detail={"task_key": task.task_key, "outcome": outcome,
                               "at": at.isoformat()})
            if breach is not None:
                s.breaches += 1
                case.event("compliance_breach", f"compliance breach ({breach}): {reason}",
                           rule=breach, actor=task.agent,
                           detail={"task_key": task.task_key, "step": step.id, "channel": kind,
                                   "at": at.isoformat()})

        await self._close(TaskClose(
            task_key=task.task_key, status="done", outcome=outcome, completed_at=case.now(),
            agent=task.agent, note=task.note, contacted_at=at, breach_rule=breach), noted)
        if outcome == TaskOutcome.WRONG_NUMBER.value:
            s.mark_unusable("phone", "wrong number reported by an agent")
        elif outcome in ESCALATING and s.active:
            case.escalate(f"{kind} outcome {outcome}")

    def _capped(self, kind: str) -> bool:
        pack = self.case.s.policy.rule_pack
        return any(kind in cap.channels for cap in pack.caps) or (
            kind == "call" and pack.post_conversation_quiet_days > 0)

    def _contact_row(self, step: Step, decision: str, *, at: datetime, rule: str, reason: str,
                     outcome: str | None, moved: bool = True) -> None:
        """The decision on a task's contact row (its reserved attempt), keyed by the task."""
        s = self.case.s
        self.effects.contact_decided(ContactRecord(
            key=f"{self.workflow_id}/{step.id}", loan_id=s.loan.loan_id,
            borrower_key=s.borrower_key, contact_key=addresses.contact_key(s.loan, step.kind),
            channel=step.kind, step_id=step.id, stage=s.stage.value, decision=decision, at=at,
            rule=rule, reason=reason, outcome=outcome,
            local_date=compliance.local(at, s.loan.timezone).date(), moved=moved,
        ))
