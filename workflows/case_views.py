"""How a case looks from outside: the status an operator queries, with its next action and its
open arrangements as plain values."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from contracts.messages import CaseStatus
from workflows import ladder
from workflows.case import Case


def status(case: Case) -> CaseStatus:
    s = case.s
    next_action, next_at = _next_action(case)
    return CaseStatus(
        loan_id=s.loan.loan_id, state=s.state, stage=s.stage, days_past_due=case.dpd(),
        outstanding=s.outstanding, currency=s.loan.currency, principal=s.principal,
        interest=s.interest, fees=s.fees, paid_total=s.paid_total,
        next_action=next_action, next_action_at=next_at,
        promise=_plain(s.promise) if s.promise and s.promise.status == "open" else None,
        plan=_plain(s.plan) if s.plan and s.plan.status == "active" else None,
        settlement=(_plain(s.settlement)
                    if s.settlement and s.settlement.status == "open" else None),
        hold=_plain(s.hold) if s.hold else None, contact_counts=dict(s.contact_counts),
        policy_name=s.policy.name, policy_version=s.policy.version, segment=s.policy.segment,
        rule_pack=s.policy.rule_pack.name, ceased=s.ceased, assigned_agent=s.assigned_agent,
        run_count=s.run_count, breaches=s.breaches, unapplied_payments=len(s.unapplied),
        placed_with=s.placement.agency_id if s.placement else None,
    )


def _next_action(case: Case) -> tuple[str | None, datetime | None]:
    s = case.s
    if not s.active:
        return None, None
    if s.open_task is not None:
        return f"awaiting {s.open_task.kind} outcome ({s.open_task.task_key})", s.open_task.due_by
    if s.paused_by is not None:
        return f"paused: {s.paused_by}", None
    step = ladder.next_step(s)
    if step is None:
        return None, None
    return f"{step.id} ({step.kind})", ladder.step_time(s, step)


def _plain(obj: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, (Decimal, date, datetime)) else v)
            for k, v in asdict(obj).items()}
