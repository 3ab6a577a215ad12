"""Money and arrangements: payments, promises, installment plans, settlements and holds.

Pure functions of a case and the policy time: they change its state, record what happened and
return when the case should look again. No Temporal here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from contracts.activity_io import PaymentRecord, UnappliedPayment
from contracts.messages import CaseState, PaymentInput, PaymentStatus
from workflows import placement
from workflows.case import Case
from workflows.case_state import CaseData, Notice, PlanState
from workflows.ledger import Balance, format_amount

# The code every unapplied payment is recorded under (a ledger rule, not a contact rule).
UNAPPLIED_RULE = "ledger.payment_not_applicable"


def check_deadlines(case: Case, now: datetime, *, closing: bool = False) -> list[datetime]:
    """Settle promises, plans, settlements and holds whose time has come; return wake times.

    `closing`: the case is about to close (paid or settled), so this is the last look: record
    what the payment fulfilled, but queue no more reminders.
    """
    s = case.s
    settings = s.policy.settings
    wake: list[datetime] = []
    if s.promise is not None and s.promise.status == "open":
        p = s.promise
        paid = s.paid_total - p.paid_before
        deadline = case.at_local(p.promised_date + timedelta(days=settings.promise_grace_days + 1))
        if paid >= p.amount:
            p.status = "kept"
            case.event("promise_kept", f"promise of {p.amount} kept ({paid} paid)", actor=p.agent)
        elif now >= deadline:
            p.status = "broken"
            s.broken_promises += 1
            case.event("promise_broken", f"promise of {p.amount} by {p.promised_date} broken "
                       f"({paid} paid); broken promises: {s.broken_promises}", actor=p.agent)
            if s.broken_promises >= settings.broken_promises_to_escalate:
                case.escalate(f"{s.broken_promises} broken promises")
        else:
            wake.append(deadline)
    if s.plan is not None and s.plan.status == "active":
        wake += _check_plan(case, s.plan, now, remind=not closing)
    if s.settlement is not None and s.settlement.status == "open":
        st = s.settlement
        deadline = case.at_local(st.pay_by + timedelta(days=settings.promise_grace_days + 1))
        if now >= deadline:
            st.status = "broken"
            case.event("settlement_broken", f"settlement of {st.amount} not paid by {st.pay_by}",
                       actor=st.agent)
        else:
            wake.append(deadline)
    if s.hold is not None:
        review = case.at_local(s.hold.review_by)
        if now >= review:
            case.event("hold_lapsed", f"{s.hold.kind} hold reached its review date "
                       f"{s.hold.review_by}; contact resumes")
            s.hold = None
        else:
            wake.append(review)
    return wake


def _check_plan(case: Case, plan: PlanState, now: datetime, *, remind: bool) -> list[datetime]:
    s = case.s
    settings = s.policy.settings
    paid = s.paid_total - plan.paid_before
    covered = Decimal("0")
    for i, inst in enumerate(plan.installments):
        covered += inst.amount
        if i < plan.next_index:
            continue
        if paid >= covered:
            plan.next_index = i + 1
            case.event("installment_paid", f"installment {i + 1} of {len(plan.installments)} paid")
            continue
        remind_at = case.at_local(
            inst.due_date - timedelta(days=settings.installment_reminder_days), 10)
        if remind and now >= remind_at and i not in plan.reminded:
            plan.reminded.append(i)
            s.pending_notices.append(Notice(
                key=f"plan-{len(s.timeline)}-inst{i + 1}", template="installment_reminder",
                channels=["sms", "email"],
                extra={"installment_amount": format_amount(inst.amount),
                       "installment_due": inst.due_date.isoformat()},
            ))
        deadline = case.at_local(
            inst.due_date + timedelta(days=settings.installment_grace_days + 1))
        if now >= deadline:
            plan.status = "broken"
            case.event("plan_broken", f"installment {i + 1} ({inst.amount} due {inst.due_date}) "
                       "missed past grace; escalation resumes", actor=plan.agent)
            return []
        return [t for t in (remind_at, deadline) if t > now]
    plan.status = "completed"
    case.event("plan_completed", "installment plan completed", actor=plan.agent)
    return []


def unapplicable(s: CaseData, p: PaymentInput) -> str | None:
    """Why money reported as received cannot be applied to this loan, or None if it can."""
    if p.currency != s.loan.currency:
        return f"currency {p.currency} differs from the loan's {s.loan.currency}"
    if not p.amount.is_finite():
        return "amount is not a finite number"
    if p.amount <= 0:
        return f"amount {p.amount} is not positive"
    return None


def apply_payment(case: Case, p: PaymentInput) -> tuple[PaymentStatus, str]:
    """Apply a payment, or record it as unapplied with the reason (money received is never
    dropped); returns what became of it and a one-line account of it."""
    s = case.s
    if p.payment_id in s.payment_ids:
        return PaymentStatus.DUPLICATE, f"payment {p.payment_id} was already applied"
    paid_at = p.paid_at or case.real_now()
    reason = unapplicable(s, p)
    if reason is not None:
        if p.payment_id in s.unapplied:
            return PaymentStatus.DUPLICATE, (f"payment {p.payment_id} was already recorded as "
                                             f"unapplied: {s.unapplied[p.payment_id]}")
        s.unapplied[p.payment_id] = reason
        s.pending_unapplied.append(UnappliedPayment(s.loan.loan_id, p.payment_id, p.amount,
                                                    p.currency, paid_at, reason))
        case.event("payment_unapplied", f"payment {p.payment_id} of {p.amount} {p.currency} "
                   f"received but not applied: {reason}", actor=p.source, rule=UNAPPLIED_RULE,
                   detail={"payment_id": p.payment_id, "amount": str(p.amount),
                           "currency": p.currency, "reason": reason})
        return PaymentStatus.UNAPPLIED, reason
    if p.payment_id in s.unapplied:  # a corrected report of a payment that was not applied
        earlier = s.unapplied.pop(p.payment_id)
        s.pending_unapplied.append(UnappliedPayment(s.loan.loan_id, p.payment_id, p.amount,
                                                    p.currency, paid_at, earlier, "resolved"))
    s.payment_ids.append(p.payment_id)
    if not s.active:
        s.excess += p.amount
        case.event("payment_after_close", f"payment {p.payment_id} of {p.amount} arrived after "
                   f"the case closed; recorded as excess", actor=p.source)
        s.pending_payments.append(PaymentRecord(s.loan.loan_id, p.payment_id, p.amount,
                                                p.currency, paid_at, {"excess": str(p.amount)}))
        return PaymentStatus.APPLIED, (f"payment {p.payment_id} of {p.amount} {p.currency} "
                                       "recorded as excess: the case is closed")
    order: list[str] = list(s.policy.settings.payment_order)
    balance, allocation, excess = s.balance.allocate(p.amount, order)
    s.set_balance(balance)
    s.paid_total += p.amount
    alloc = {k: str(v) for k, v in allocation.items()}
    if excess > 0:
        alloc["excess"] = str(excess)
        s.excess += excess
    placement.credit(case, p.amount - excess)  # recovered while placed, if placed
    s.pending_payments.append(PaymentRecord(s.loan.loan_id, p.payment_id, p.amount, p.currency,
                                            paid_at, alloc))
    case.event("payment", f"payment {p.payment_id} of {p.amount} {p.currency} applied "
               f"({', '.join(f'{k} {v}' for k, v in alloc.items())}); outstanding {s.outstanding}",
               actor=p.source, detail={"payment_id": p.payment_id, "allocation": alloc})
    st = s.settlement
    if st is not None and st.status == "open" and s.paid_total - st.paid_before >= st.amount:
        st.status = "settled"
        waived = s.outstanding
        s.set_balance(Balance(Decimal("0"), Decimal("0"), Decimal("0")))
        case.event("settled", f"settlement of {st.amount} paid; remaining {waived} waived",
                   actor=st.agent, detail={"waived": str(waived)})
        placement.end(case, "settled")
        case.notify("settlement_receipt", ["sms", "email"],
                    {"settlement_amount": format_amount(st.amount)})
        check_deadlines(case, case.now(), closing=True)  # a promise or plan it fulfilled
        case.close(CaseState.SETTLED, "settled")
    elif s.outstanding <= 0:
        placement.end(case, "paid_in_full")
        case.notify("payment_receipt", ["sms", "email"],
                    {"excess": format_amount(s.excess) if s.excess > 0 else ""})
        check_deadlines(case, case.now(), closing=True)  # a promise or plan it fulfilled
        with_excess = f" with {s.excess} excess" if s.excess > 0 else ""
        case.close(CaseState.PAID, f"paid in full{with_excess}")
    else:
        case.notify("payment_ack", ["sms"], {"paid_amount": format_amount(p.amount)})
    case.wake = True
    return PaymentStatus.APPLIED, (f"payment {p.payment_id} of {p.amount} {p.currency} applied; "
                                   f"outstanding {s.outstanding}")
