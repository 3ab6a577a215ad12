"""The case's handlers for its collection-agency placement: operators place and recall it, the
agency returns it, reports its contacts and takes promises; the placement query.

The workflow class inherits these beside the case's own handlers (workflows/handlers.py).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts.agency import (
        AgencyContactInput,
        AgencyContactResult,
        AgencyPromiseInput,
        AgencyReturnInput,
        PlaceInput,
        PlacementView,
        RecallInput,
    )
    from contracts.messages import PromiseInput, UpdateResult
    from contracts.names import Query, Update
    from workflows import negotiation, placement
    from workflows.case import Case
    from workflows.case_state import PromiseState
    from workflows.handler_base import HandlerBase, refusal, refused


class AgencyHandlers(HandlerBase):
    """How operators and a collection agency act on the case's placement."""

    @workflow.update(name=Update.PLACE)
    async def place(self, p: PlaceInput) -> UpdateResult:
        case = await self._until_open()
        refused(lambda: _check_place(case))
        placed, message = await placement.place(case, actor=p.actor, reason=p.reason,
                                                agency_id=p.agency_id)
        if placed is None:
            raise refusal(message)
        return self._result(case, message)

    @place.validator
    def _check_place_update(self, p: PlaceInput) -> None:
        self._validate(_check_place)

    @workflow.update(name=Update.RECALL)
    async def recall(self, r: RecallInput) -> UpdateResult:
        case = await self._until_open()
        refused(lambda: _check_placed(case, None))
        ended = placement.end(case, "recalled", actor=r.actor)
        assert ended is not None
        return self._result(case, f"recalled from agency {ended.agency_id}: {ended.recovered} "
                                  f"recovered, commission {ended.commission}; ladder resumes")

    @recall.validator
    def _check_recall(self, r: RecallInput) -> None:
        self._validate(lambda c: _check_placed(c, None))

    @workflow.update(name=Update.AGENCY_RETURN)
    async def agency_return(self, r: AgencyReturnInput) -> UpdateResult:
        case = await self._until_open()
        refused(lambda: _check_placed(case, r.agency_id))
        ended = placement.end(case, "returned", actor=placement.agency_actor(r.agency_id))
        assert ended is not None
        return self._result(case, f"returned by agency {ended.agency_id}: {ended.recovered} "
                                  f"recovered, commission {ended.commission}")

    @agency_return.validator
    def _check_return(self, r: AgencyReturnInput) -> None:
        self._validate(lambda c: _check_placed(c, r.agency_id))

    @workflow.update(name=Update.AGENCY_CONTACT)
    async def agency_contact(self, o: AgencyContactInput) -> AgencyContactResult:
        case = await self._until_open()
        refused(lambda: _check_agency_contact(case, o))
        return await placement.report_contact(case, workflow.info().workflow_id, o)

    @agency_contact.validator
    def _check_agency_contact_update(self, o: AgencyContactInput) -> None:
        self._validate(lambda c: _check_agency_contact(c, o))

    @workflow.update(name=Update.AGENCY_PROMISE)
    async def agency_promise(self, p: AgencyPromiseInput) -> UpdateResult:
        case = await self._until_open()
        s = case.s
        promise = PromiseInput(agent=placement.agency_actor(p.agency_id), amount=p.amount,
                               currency=p.currency, promised_date=p.promised_date)
        refused(lambda: _check_agency_promise(case, p.agency_id, promise))
        if s.promise is not None and s.promise.status == "open":
            s.promise.status = "cancelled"
            case.event("promise_cancelled", "earlier promise replaced", actor=promise.agent)
        s.promise = PromiseState(agent=promise.agent, amount=p.amount,
                                 promised_date=p.promised_date, made_at=case.now(),
                                 paid_before=s.paid_total)
        case.event("promise", f"promise to pay {p.amount} {p.currency} by {p.promised_date} "
                   f"(taken by agency {p.agency_id})", actor=promise.agent,
                   detail={"amount": str(p.amount), "date": p.promised_date.isoformat()})
        return self._result(case, f"promise recorded: {p.amount} {p.currency} by "
                                  f"{p.promised_date}")

    @agency_promise.validator
    def _check_agency_promise(self, p: AgencyPromiseInput) -> None:
        promise = PromiseInput(agent=placement.agency_actor(p.agency_id), amount=p.amount,
                               currency=p.currency, promised_date=p.promised_date)
        self._validate(lambda c: _check_agency_promise(c, p.agency_id, promise))

    @workflow.query(name=Query.PLACEMENT)
    def placement_view(self) -> PlacementView:
        if self._case is None:
            raise ApplicationError("case is still opening")
        return placement.view(self._case.s)


def _check_place(case: Case) -> None:
    s = case.s
    if not s.active:
        raise negotiation.Refusal(f"case is {s.state.value}")
    if s.simulate:
        raise negotiation.Refusal("a simulated case is not placed with an agency")
    if s.placement is not None:
        raise negotiation.Refusal(f"already placed with agency {s.placement.agency_id}")
    if s.ceased:
        raise negotiation.Refusal("the borrower asked to cease contact")


def _check_placed(case: Case, agency_id: str | None) -> None:
    s = case.s
    if not s.active:
        raise negotiation.Refusal(f"case is {s.state.value}")
    if s.placement is None:
        raise negotiation.Refusal("case is not placed with an agency")
    if agency_id is not None and s.placement.agency_id != agency_id:
        raise negotiation.Refusal(f"case is not placed with agency {agency_id}")


def _check_agency_promise(case: Case, agency_id: str, promise: PromiseInput) -> None:
    _check_placed(case, agency_id)
    negotiation.check_promise(case.s, promise, case.today())


def _check_agency_contact(case: Case, o: AgencyContactInput) -> None:
    _check_placed(case, o.agency_id)
    p = case.s.placement
    assert p is not None
    negotiation.check_task_time(o.at, None, case.real_now())
    at = case.clock.policy_time(o.at)
    if at < p.placed_at:
        raise negotiation.Refusal("the contact is dated before the case was placed")
