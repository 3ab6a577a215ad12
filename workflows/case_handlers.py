"""The case's message handlers: the loan system's payments, agents' updates, operators' queries."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import negotiation
    from workflows.case_state import (
        CaseData,
        HoldState,
        PlanState,
        PromiseState,
        SettlementState,
    )
    from workflows.ledger import format_amount
    from contracts.messages import (
        CaseState,
        CaseStatus,
        CeaseInput,
        CloseInput,
        ExtensionInput,
        HoldInput,
        PaymentInput,
        PlanInput,
        PromiseInput,
        ResolveHoldInput,
        SettlementInput,
        Stage,
        TaskOutcomeInput,
        TimelineEvent,
        UpdateResult,
        WaiverInput,
    )
from workflows.case_base import (
    CaseBase,
)


def _refuse(err: negotiation.Refusal) -> ApplicationError:
    return ApplicationError(str(err), type="Refused", non_retryable=True)



class CaseHandlers(CaseBase):
    """How the outside world talks to a case: one signal, updates with validators, queries."""

    @workflow.signal
    def pay(self, payment: PaymentInput) -> None:
        """From the loan system. Fire-and-forget: a repeated payment id is ignored."""
        if self.s is None:
            self._inbox.append(payment)  # applied once the policy (and its payment order) is known
        else:
            self._apply_payment(payment)

    def _ready(self) -> bool:
        return self.s is not None

    # --------------------------------------------------------------- updates

    async def _until_ready(self) -> CaseData:
        await workflow.wait_condition(self._ready)
        assert self.s is not None
        return self.s

    def _result(self, message: str) -> UpdateResult:
        assert self.s is not None
        self._wake = True
        return UpdateResult(accepted=True, message=message, outstanding=self.s.outstanding,
                            currency=self.s.loan.currency)

    def _validate(self, check: Any, *args: Any) -> None:
        if self.s is None:
            return  # checked again by the handler once the case has opened
        try:
            check(self.s, *args)
        except negotiation.Refusal as err:
            raise _refuse(err) from None

    @workflow.update
    async def promise(self, p: PromiseInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_promise, p, self._today())
        if s.promise is not None and s.promise.status == "open":
            s.promise.status = "cancelled"
            self._event("promise_cancelled", "earlier promise replaced", actor=p.agent)
        s.promise = PromiseState(agent=p.agent, amount=p.amount, promised_date=p.promised_date,
                                 made_at=self._now(), paid_before=s.paid_total)
        s.assigned_agent = p.agent
        self._event("promise", f"promise to pay {p.amount} {p.currency} by {p.promised_date}",
                    actor=p.agent, detail={"amount": str(p.amount), "date": p.promised_date.isoformat()})
        self._notify("promise_confirmation", ["sms"], {"promised_amount": format_amount(p.amount),
                                                       "promised_date": p.promised_date.isoformat()})
        return self._result(f"promise recorded: {p.amount} {p.currency} by {p.promised_date}; escalation paused")

    @promise.validator
    def _check_promise(self, p: PromiseInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_promise, p, self._today())

    @workflow.update
    async def plan(self, p: PlanInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_plan, p, self._today())
        s.plan = PlanState(agent=p.agent, installments=list(p.installments), made_at=self._now(),
                           paid_before=s.paid_total)
        s.assigned_agent = p.agent
        self._event("plan", f"installment plan of {len(p.installments)} installments agreed",
                    actor=p.agent, detail={"installments": [
                        {"amount": str(i.amount), "due_date": i.due_date.isoformat()} for i in p.installments]})
        return self._result(f"plan recorded: {len(p.installments)} installments; escalation paused")

    @plan.validator
    def _check_plan_update(self, p: PlanInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_plan, p, self._today())

    @workflow.update
    async def extend(self, e: ExtensionInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_extension, e)
        old = s.due_date
        s.due_date = e.new_due_date
        s.assigned_agent = e.agent
        self._event("extension", f"due date extended from {old} to {e.new_due_date}", actor=e.agent,
                    detail={"reason": e.reason})
        return self._result(f"due date extended to {e.new_due_date}")

    @extend.validator
    def _check_extend(self, e: ExtensionInput) -> None:
        self._validate(negotiation.check_extension, e)

    @workflow.update
    async def waive(self, w: WaiverInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_waiver, w)
        s.set_balance(s.balance.waive(w.component, w.amount))
        s.assigned_agent = w.agent
        self._event("waiver", f"{w.amount} {w.currency} of {w.component} waived; outstanding {s.outstanding}",
                    actor=w.agent, detail={"component": w.component, "amount": str(w.amount), "reason": w.reason})
        if s.outstanding <= 0:
            self._notify("payment_receipt", ["sms", "email"], {"excess": ""})
            self._close(CaseState.PAID, "balance cleared by waiver", actor=w.agent)
        return self._result(f"waived {w.amount} {w.currency} of {w.component}")

    @waive.validator
    def _check_waive(self, w: WaiverInput) -> None:
        self._validate(negotiation.check_waiver, w)

    @workflow.update
    async def settle(self, st: SettlementInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_settlement, st, self._today())
        s.settlement = SettlementState(agent=st.agent, amount=st.amount, pay_by=st.pay_by,
                                       made_at=self._now(), paid_before=s.paid_total)
        s.assigned_agent = st.agent
        self._event("settlement", f"settlement of {st.amount} {st.currency} offered, pay by {st.pay_by}",
                    actor=st.agent, detail={"amount": str(st.amount), "pay_by": st.pay_by.isoformat()})
        return self._result(f"settlement recorded: {st.amount} {st.currency} by {st.pay_by}")

    @settle.validator
    def _check_settle(self, st: SettlementInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_settlement, st, self._today())

    @workflow.update
    async def hold(self, h: HoldInput) -> UpdateResult:
        s = await self._until_ready()
        today = self._today()
        self._validate(negotiation.check_hold, h, today)
        review_by = h.review_by or today + timedelta(days=s.policy.settings.hold_review_days)
        s.hold = HoldState(kind=h.kind, actor=h.actor, reason=h.reason, since=self._now(), review_by=review_by)
        self._event("hold", f"{h.kind} hold until review on {review_by}: contact paused", actor=h.actor,
                    detail={"reason": h.reason})
        return self._result(f"{h.kind} hold placed; review by {review_by}")

    @hold.validator
    def _check_hold_update(self, h: HoldInput) -> None:
        if self.s is not None:
            self._validate(negotiation.check_hold, h, self._today())

    @workflow.update
    async def resolve(self, r: ResolveHoldInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_resolve)
        assert s.hold is not None
        kind = s.hold.kind
        s.hold = None
        self._event("hold_resolved", f"{kind} hold resolved: {r.resolution}", actor=r.actor,
                    detail={"reason": r.reason})
        return self._result(f"{kind} hold resolved ({r.resolution}); contact resumes")

    @resolve.validator
    def _check_resolve(self, r: ResolveHoldInput) -> None:
        self._validate(negotiation.check_resolve)

    @workflow.update
    async def cease(self, c: CeaseInput) -> UpdateResult:
        s = await self._until_ready()
        self._validate(negotiation.check_cease)
        s.ceased = True
        self._event("cease", f"borrower asked to cease contact: {c.reason}", actor=c.actor)
        return self._result("contact ceased; only notices the rules allow will be sent")

    @cease.validator
    def _check_cease(self, c: CeaseInput) -> None:
        self._validate(negotiation.check_cease)

    @workflow.update
    async def close(self, c: CloseInput) -> UpdateResult:
        await self._until_ready()
        self._validate(negotiation.check_close, c)
        self._close(CaseState.CLOSED, c.reason, actor=c.actor)
        self._set_stage(Stage.CLOSED)
        return self._result(f"case closed: {c.reason}")

    @close.validator
    def _check_close(self, c: CloseInput) -> None:
        self._validate(negotiation.check_close, c)

    @workflow.update
    async def task_outcome(self, o: TaskOutcomeInput) -> UpdateResult:
        s = await self._until_ready()
        self._check_task(o)
        assert s.open_task is not None
        s.open_task.outcome = o.outcome.value
        s.open_task.agent = o.agent or None
        s.open_task.note = o.note or None
        if o.agent:
            s.assigned_agent = o.agent
        return self._result(f"{s.open_task.kind} outcome recorded: {o.outcome.value}")

    @task_outcome.validator
    def _check_task(self, o: TaskOutcomeInput) -> None:
        if self.s is None:
            return
        t = self.s.open_task
        if t is None or t.task_key != o.task_key:
            raise ApplicationError(f"no open task {o.task_key!r} on this case", type="Refused",
                                   non_retryable=True)
        if t.outcome is not None:
            raise ApplicationError(f"task {o.task_key!r} already has an outcome", type="Refused",
                                   non_retryable=True)

    # --------------------------------------------------------------- queries

    @workflow.query
    def status(self) -> CaseStatus:
        if self.s is None:
            raise ApplicationError("case is still opening")
        s = self.s
        next_action, next_at = self._next_action()
        return CaseStatus(
            loan_id=s.loan.loan_id, state=s.state, stage=s.stage, days_past_due=self._dpd(),
            outstanding=s.outstanding, currency=s.loan.currency, principal=s.principal,
            interest=s.interest, fees=s.fees, paid_total=s.paid_total,
            next_action=next_action, next_action_at=next_at,
            promise=_plain(s.promise) if s.promise and s.promise.status == "open" else None,
            plan=_plain(s.plan) if s.plan and s.plan.status == "active" else None,
            settlement=_plain(s.settlement) if s.settlement and s.settlement.status == "open" else None,
            hold=_plain(s.hold) if s.hold else None, contact_counts=dict(s.contact_counts),
            policy_name=s.policy.name, policy_version=s.policy.version, segment=s.policy.segment,
            rule_pack=s.policy.rule_pack.name, ceased=s.ceased, assigned_agent=s.assigned_agent,
            run_count=s.run_count,
        )

    def _next_action(self) -> tuple[str | None, datetime | None]:
        assert self.s is not None
        s = self.s
        if not s.active:
            return None, None
        if s.open_task is not None:
            return f"awaiting {s.open_task.kind} outcome ({s.open_task.task_key})", s.open_task.due_by
        if s.paused_by is not None:
            return f"paused: {s.paused_by}", None
        pending = [st for st in s.policy.steps if st.id not in s.done_steps]
        if not pending:
            return None, None
        step = min(pending, key=self._step_time)
        return f"{step.id} ({step.kind})", self._step_time(step)

    @workflow.query
    def timeline(self) -> list[TimelineEvent]:
        return list(self.s.timeline) if self.s is not None else []




def _plain(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, (Decimal, date, datetime)) else v) for k, v in asdict(obj).items()}

