"""The case's message handlers: the loan system's payments, agents' updates, operators' queries.

Handlers may arrive before the case has opened (its policy is still being resolved): a payment
waits in the inbox, an update waits until the case is open, a query says it is still opening.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts.channels import channel
    from contracts.messages import (
        CaseState,
        CaseStatus,
        CeaseInput,
        CloseInput,
        DeliveryReport,
        ExtensionInput,
        HoldInput,
        PaymentInput,
        PaymentResult,
        PaymentStatus,
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
    from contracts.names import Query, Signal, Update
    from workflows import arrangements, case_updates, case_views, negotiation, placement
    from workflows.case import Case
    from workflows.case_state import (
        OpenTask,
        SettlementState,
    )
    from workflows.contacts import DELIVERY_FAILED_PATCH, UNDELIVERED_RULE, delivery_fallback
    from workflows.handler_base import HandlerBase, refusal, refused


class CaseHandlers(HandlerBase):
    """How the outside world talks to a case: signals for facts (a payment, a message not
    delivered), updates with validators, queries. The agency placement's updates are beside
    these, in workflows/agency_handlers.py."""

    _inbox: list[PaymentInput]

    def _start_handlers(self, case: Case | None) -> None:
        self._case = case
        self._inbox = []

    def _open(self, case: Case) -> None:
        """The case is open: updates waiting for it go ahead, and early payments are applied."""
        self._case = case
        for payment in self._inbox:
            arrangements.apply_payment(case, payment)
        self._inbox.clear()

    @workflow.signal(name=Signal.PAY)
    def pay(self, payment: PaymentInput) -> None:
        """From the loan system, for signal-with-start (the case may not exist yet). Fire-and-
        forget: a repeated payment id is ignored; one that cannot be applied is kept as
        unapplied. A caller that needs the answer uses the `pay` update."""
        if self._case is None:
            self._inbox.append(payment)  # applied once the policy (and its payment order) is known
        else:
            arrangements.apply_payment(self._case, payment)

    @workflow.signal(name=Signal.DELIVERY_FAILED)
    def delivery_failed(self, report: DeliveryReport) -> None:
        """From the providers' webhooks: a message this case sent was not delivered. Ignored when
        the case is closed or the message is not one of its sends. An address the provider says
        is unusable stops its channels; a ladder step whose channels lack the message's fallback
        gets it once, sent by the run loop (a handler runs no activity that could outlive it)."""
        case = self._case
        if case is None or not case.s.active:
            return
        s = case.s
        sent = s.sent_messages.get(report.outbox_key)
        if sent is None or not workflow.patched(DELIVERY_FAILED_PATCH):
            return
        code = report.error_code or report.status
        reason = f"provider: {code}"
        if report.address_unusable:
            s.mark_unusable(channel(sent.channel).address_field, reason)
        to = delivery_fallback(s, sent)
        case.event(
            "delivery_failed",
            f"{sent.channel} message {report.status} ({code})"
            + ("; address unusable" if report.address_unusable else "")
            + (f"; falling back to {to}" if to else ""),
            rule=UNDELIVERED_RULE,
            detail={"step": sent.step_id, "channel": sent.channel, "outbox_key": report.outbox_key,
                    "status": report.status, "error_code": report.error_code,
                    "address_unusable": report.address_unusable})
        if to is not None and report.outbox_key not in s.pending_fallbacks:
            s.pending_fallbacks.append(report.outbox_key)
            case.wake = True

    @workflow.update(name=Update.PAY)
    async def record_payment(self, payment: PaymentInput) -> PaymentResult:
        """A payment with its answer: applied, duplicate, or unapplied and why."""
        case = await self._until_open()
        status, message = arrangements.apply_payment(case, payment)
        s = case.s
        return PaymentResult(
            payment_id=payment.payment_id, status=status, message=message,
            outstanding=s.outstanding, currency=s.loan.currency,
            reason=message if status == PaymentStatus.UNAPPLIED else "",
        )

    @record_payment.validator
    def _check_payment(self, payment: PaymentInput) -> None:
        refused(lambda: negotiation.check_payment_form(payment, workflow.now()))

    # --------------------------------------------------------------- updates

    @workflow.update(name=Update.PROMISE)
    async def promise(self, p: PromiseInput) -> UpdateResult:
        case = await self._until_open()
        return self._result(case, refused(lambda: case_updates.promise(case, p)))

    @promise.validator
    def _check_promise(self, p: PromiseInput) -> None:
        self._validate(lambda c: negotiation.check_promise(c.s, p, c.today()))

    @workflow.update(name=Update.PLAN)
    async def plan(self, p: PlanInput) -> UpdateResult:
        case = await self._until_open()
        return self._result(case, refused(lambda: case_updates.plan(case, p)))

    @plan.validator
    def _check_plan_update(self, p: PlanInput) -> None:
        self._validate(lambda c: negotiation.check_plan(c.s, p, c.today()))

    @workflow.update(name=Update.EXTEND)
    async def extend(self, e: ExtensionInput) -> UpdateResult:
        case = await self._until_open()
        s = case.s
        refused(lambda: negotiation.check_extension(s, e))
        old = s.due_date
        s.due_date = e.new_due_date
        s.assigned_agent = e.agent
        case.event("extension", f"due date extended from {old} to {e.new_due_date}", actor=e.agent,
                   detail={"reason": e.reason})
        return self._result(case, f"due date extended to {e.new_due_date}")

    @extend.validator
    def _check_extend(self, e: ExtensionInput) -> None:
        self._validate(lambda c: negotiation.check_extension(c.s, e))

    @workflow.update(name=Update.WAIVE)
    async def waive(self, w: WaiverInput) -> UpdateResult:
        case = await self._until_open()
        s = case.s
        refused(lambda: negotiation.check_waiver(s, w))
        s.set_balance(s.balance.waive(w.component, w.amount))
        s.assigned_agent = w.agent
        case.event("waiver", f"{w.amount} {w.currency} of {w.component} waived; "
                   f"outstanding {s.outstanding}", actor=w.agent,
                   detail={"component": w.component, "amount": str(w.amount), "reason": w.reason})
        if s.outstanding <= 0:
            placement.end(case, "paid_in_full", actor=w.agent)
            case.notify("payment_receipt", ["sms", "email"], {"excess": ""})
            case.close(CaseState.PAID, "balance cleared by waiver", actor=w.agent)
        return self._result(case, f"waived {w.amount} {w.currency} of {w.component}")

    @waive.validator
    def _check_waive(self, w: WaiverInput) -> None:
        self._validate(lambda c: negotiation.check_waiver(c.s, w))

    @workflow.update(name=Update.SETTLE)
    async def settle(self, st: SettlementInput) -> UpdateResult:
        case = await self._until_open()
        s = case.s
        refused(lambda: negotiation.check_settlement(s, st, case.today()))
        s.settlement = SettlementState(agent=st.agent, amount=st.amount, pay_by=st.pay_by,
                                       made_at=case.now(), paid_before=s.paid_total)
        s.assigned_agent = st.agent
        case.event("settlement",
                   f"settlement of {st.amount} {st.currency} offered, pay by {st.pay_by}",
                   actor=st.agent,
                   detail={"amount": str(st.amount), "pay_by": st.pay_by.isoformat()})
        return self._result(case, f"settlement recorded: {st.amount} {st.currency} by {st.pay_by}")

    @settle.validator
    def _check_settle(self, st: SettlementInput) -> None:
        self._validate(lambda c: negotiation.check_settlement(c.s, st, c.today()))

    @workflow.update(name=Update.HOLD)
    async def hold(self, h: HoldInput) -> UpdateResult:
        case = await self._until_open()
        return self._result(case, refused(lambda: case_updates.hold(case, h)))

    @hold.validator
    def _check_hold_update(self, h: HoldInput) -> None:
        self._validate(lambda c: negotiation.check_hold(c.s, h, c.today()))

    @workflow.update(name=Update.RESOLVE)
    async def resolve(self, r: ResolveHoldInput) -> UpdateResult:
        case = await self._until_open()
        s = case.s
        kind = refused(lambda: negotiation.check_resolve(s)).kind
        s.hold = None
        case.event("hold_resolved", f"{kind} hold resolved: {r.resolution}", actor=r.actor,
                   detail={"reason": r.reason})
        return self._result(case, f"{kind} hold resolved ({r.resolution}); contact resumes")

    @resolve.validator
    def _check_resolve(self, r: ResolveHoldInput) -> None:
        self._validate(lambda c: negotiation.check_resolve(c.s))

    @workflow.update(name=Update.CEASE)
    async def cease(self, c: CeaseInput) -> UpdateResult:
        case = await self._until_open()
        return self._result(case, refused(lambda: case_updates.cease(case, c)))

    @cease.validator
    def _check_cease(self, c: CeaseInput) -> None:
        self._validate(lambda k: negotiation.check_cease(k.s))

    @workflow.update(name=Update.CLOSE)
    async def close(self, c: CloseInput) -> UpdateResult:
        case = await self._until_open()
        refused(lambda: negotiation.check_close(case.s, c))
        placement.end(case, "case_closed", actor=c.actor)
        case.close(CaseState.CLOSED, c.reason, actor=c.actor)
        case.set_stage(Stage.CLOSED)
        return self._result(case, f"case closed: {c.reason}")

    @close.validator
    def _check_close(self, c: CloseInput) -> None:
        self._validate(lambda k: negotiation.check_close(k.s, c))

    @workflow.update(name=Update.TASK_OUTCOME)
    async def task_outcome(self, o: TaskOutcomeInput) -> UpdateResult:
        case = await self._until_open()
        task = _open_task_for(case, o)
        task.at = case.clock.policy_time(o.at) if o.at is not None else case.now()
        task.outcome = o.outcome.value
        task.agent = o.agent or None
        task.note = o.note or None
        if o.agent:
            case.s.assigned_agent = o.agent
        return self._result(case, f"{task.kind} outcome recorded: {o.outcome.value}")

    @task_outcome.validator
    def _check_task(self, o: TaskOutcomeInput) -> None:
        if self._case is not None:
            _open_task_for(self._case, o)

    # --------------------------------------------------------------- queries

    @workflow.query(name=Query.STATUS)
    def status(self) -> CaseStatus:
        if self._case is None:
            raise ApplicationError("case is still opening")
        return case_views.status(self._case)

    @workflow.query(name=Query.TIMELINE)
    def timeline(self) -> list[TimelineEvent]:
        return list(self._case.s.timeline) if self._case is not None else []


def _open_task_for(case: Case, o: TaskOutcomeInput) -> OpenTask:
    s = case.s
    withdrawn = s.withdrawn_tasks.get(o.task_key)
    if withdrawn is not None:
        raise refusal(f"task {o.task_key!r} was withdrawn: {withdrawn}")
    t = s.open_task
    if t is None or t.task_key != o.task_key:
        raise refusal(f"no open task {o.task_key!r} on this case")
    if t.outcome is not None:
        raise refusal(f"task {o.task_key!r} already has an outcome")
    if t.withdraws_on_hold:
        # Withdrawn the moment the task's wait wakes; refused already, before it has.
        if not s.active:
            raise refusal(f"task {o.task_key!r} was withdrawn: case closed ({s.state.value})")
        if s.ceased:
            raise refusal(f"task {o.task_key!r} was withdrawn: borrower asked to cease contact")
        if s.hold is not None:
            raise refusal(f"task {o.task_key!r} was withdrawn: {s.hold.kind} hold")
        if o.at is not None:
            at = o.at
            refused(lambda: negotiation.check_task_time(at, None, case.real_now()))
            refused(lambda: negotiation.check_task_time(case.clock.policy_time(at),
                                                        t.created_at, case.now()))
    return t
