"""What an agent's (or a borrower's) update does to an open case: a promise, a plan, a hold, a
cease request. Pure: each checks with workflows/negotiation.py (raising its Refusal), changes the
case, records it and returns the answer's message. The update handlers (workflows/handlers.py)
and a simulated borrower (workflows/behaviour.py) both call these, so they follow one set of rules.
"""

from __future__ import annotations

from datetime import timedelta

from contracts.messages import CeaseInput, HoldInput, PlanInput, PromiseInput
from workflows import negotiation
from workflows.case import Case
from workflows.case_state import HoldState, PlanState, PromiseState
from workflows.ledger import format_amount


def promise(case: Case, p: PromiseInput) -> str:
    s = case.s
    negotiation.check_promise(s, p, case.today())
    if s.promise is not None and s.promise.status == "open":
        s.promise.status = "cancelled"
        case.event("promise_cancelled", "earlier promise replaced", actor=p.agent)
    s.promise = PromiseState(agent=p.agent, amount=p.amount, promised_date=p.promised_date,
                             made_at=case.now(), paid_before=s.paid_total)
    s.assigned_agent = p.agent
    case.event("promise", f"promise to pay {p.amount} {p.currency} by {p.promised_date}",
               actor=p.agent,
               detail={"amount": str(p.amount), "date": p.promised_date.isoformat()})
    case.notify("promise_confirmation", ["sms"], {"promised_amount": format_amount(p.amount),
                                                  "promised_date": p.promised_date.isoformat()})
    return (f"promise recorded: {p.amount} {p.currency} by {p.promised_date}; "
            "escalation paused")


def plan(case: Case, p: PlanInput) -> str:
    s = case.s
    negotiation.check_plan(s, p, case.today())
    s.plan = PlanState(agent=p.agent, installments=list(p.installments), made_at=case.now(),
                       paid_before=s.paid_total)
    s.assigned_agent = p.agent
    case.event("plan", f"installment plan of {len(p.installments)} installments agreed",
               actor=p.agent, detail={"installments": [
                   {"amount": str(i.amount), "due_date": i.due_date.isoformat()}
                   for i in p.installments]})
    return f"plan recorded: {len(p.installments)} installments; escalation paused"


def hold(case: Case, h: HoldInput) -> str:
    s = case.s
    today = case.today()
    negotiation.check_hold(s, h, today)
    review_by = h.review_by or today + timedelta(days=s.policy.settings.hold_review_days)
    s.hold = HoldState(kind=h.kind, actor=h.actor, reason=h.reason, since=case.now(),
                       review_by=review_by)
    case.event("hold", f"{h.kind} hold until review on {review_by}: contact paused",
               actor=h.actor, detail={"reason": h.reason})
    return f"{h.kind} hold placed; review by {review_by}"


def cease(case: Case, c: CeaseInput) -> str:
    s = case.s
    negotiation.check_cease(s)
    s.ceased = True
    case.event("cease", f"borrower asked to cease contact: {c.reason}", actor=c.actor)
    return "contact ceased; only notices the rules allow will be sent"
