"""The call screen: right-party verification first, then (for `us` pack loans) the mini-Miranda
text, the case summary, the disposition with promise capture, and the plan, extension, waiver
and settlement forms. A refusal is shown inline and changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from console.casework import ANSWER_WITHIN, full_borrower
from console.web import ConsoleRoute, Denied, Viewer, checked_form, redirect, require, sessions
from contracts.messages import UpdateResult
from service import cases, inputs, task_claims, updates
from service.errors import BadInput, Refused, ServiceError
from service.masking import mask_email

router = APIRouter(route_class=ConsoleRoute)
CHECKS: Final = ("check_name", "check_dob", "check_ref")  # the lender's identity questions
DISPOSITIONS: Final = inputs.TASK_OUTCOMES
CONTACT_KINDS: Final = ("contact", "task_outcome", "task_created", "payment", "promise")


async def _claim(v: Viewer, task_key: str) -> task_claims.Claim:
    claim = await task_claims.held_claim(v.pool, task_key, v.name)
    if claim is None:
        raise Denied(403, "forbidden")
    return claim


async def _screen(v: Viewer, claim: task_claims.Claim, *, status: int = 200,
                  message: str | None = None, error: str | None = None) -> Response:
    client = await v.temporal()
    loan = await full_borrower(client, claim.loan_id, v.pool)
    await task_claims.log_reveal(v.pool, claim, ("phone",), surface="console")
    if claim.task_key not in v.session.verified:
        return v.page("verify.html", status, claim=claim, phone=loan.phone, checks=CHECKS,
                      error=error)
    case = await cases.status(client, claim.loan_id, answer_within=ANSWER_WITHIN)
    timeline = await cases.timeline(client, claim.loan_id, answer_within=ANSWER_WITHIN)
    recent = [e for e in timeline if e.kind.startswith(CONTACT_KINDS)][-8:]
    return v.page("call.html", status, claim=claim, case=case, phone=loan.phone,
                  email=mask_email(loan.email), lender=loan.lender, zone=loan.timezone,
                  recent=reversed(recent), now=datetime.now(UTC), dispositions=DISPOSITIONS,
                  message=message, error=error, form=dict(v.request.query_params))


@router.get("/call")
async def call_screen(request: Request) -> Response:
    v = require(request, "agent")
    return await _screen(v, await _claim(v, request.query_params.get("task", "")))


@router.post("/call/verify")
async def verify(request: Request) -> Response:
    v = require(request, "agent")
    form = await checked_form(v)
    claim = await _claim(v, form.get("task_key", ""))
    if not all(form.get(c) == "on" for c in CHECKS):
        return await _screen(v, claim, status=422, error=v.t("verify_missing"))
    response = redirect(f"/console/call?task={claim.task_key}")
    sessions.save(response, v.session.with_verified(claim.task_key))
    return response


def _explain(v: Viewer, err: ServiceError) -> str:
    if isinstance(err, BadInput):
        return v.t("bad_input", field=err.field, message=err.message)
    if isinstance(err, Refused):
        return v.t("refused", reason=err.reason)
    return v.t("error", message=str(err))


async def _verified_claim(v: Viewer, form: dict[str, str]) -> task_claims.Claim:
    claim = await _claim(v, form.get("task_key", ""))
    if claim.task_key not in v.session.verified:
        raise Denied(403, "verify_missing")
    return claim


@router.post("/call/outcome")
async def outcome(request: Request) -> Response:
    """The disposition; "promised" records the promise first and reports the outcome only if the
    case accepted it."""
    v = require(request, "agent")
    form = await checked_form(v)
    claim = await _verified_claim(v, form)
    client = await v.temporal()
    chosen = form.get("outcome", "")
    try:
        if chosen == "promised":
            case = await cases.status(client, claim.loan_id, answer_within=ANSWER_WITHIN)
            arg = inputs.promise_input(v.name, form.get("amount", ""), case.currency,
                                       form.get("date", ""))
            await updates.promise(client, claim.loan_id, arg, answer_within=ANSWER_WITHIN)
        note = " ".join(filter(None, (form.get("method") and f"method: {form['method']}",
                                      form.get("note")))) or None
        await updates.task_outcome(
            client, claim.loan_id, inputs.task_outcome_input(claim.task_key, chosen, v.name, note),
            answer_within=ANSWER_WITHIN)
    except ServiceError as err:
        return await _screen(v, claim, status=422, error=_explain(v, err))
    if form.get("next"):
        return redirect(await _next_task_url(v, claim.task_key))
    return redirect(f"/console/cases/{claim.loan_id}")


async def _next_task_url(v: Viewer, done: str) -> str:
    """The next task: one the agent already holds, else the queue to claim one."""
    for held in await task_claims.claims_of(v.pool, v.name):
        if held.task_key != done:
            return f"/console/call?task={held.task_key}"
    return "/console/queue"


Update = Callable[[], Awaitable[UpdateResult]]


@router.post("/call/negotiate")
async def negotiate(request: Request) -> Response:
    """Plan, extension, waiver or settlement on the case of the task being worked."""
    v = require(request, "agent")
    form = await checked_form(v)
    claim = await _verified_claim(v, form)
    client = await v.temporal()
    loan_id, agent, action = claim.loan_id, v.name, form.get("action", "")
    try:
        currency = (await cases.status(client, loan_id, answer_within=ANSWER_WITHIN)).currency
        run: Update
        if action == "plan":
            lines = [x.strip() for x in form.get("installments", "").splitlines() if x.strip()]
            plan = inputs.plan_input(agent, currency, lines)
            run = lambda: updates.plan(client, loan_id, plan)  # noqa: E731
        elif action == "extend":
            ext = inputs.extension_input(agent, form.get("new_due_date", ""),
                                         form.get("reason") or None)
            run = lambda: updates.extend(client, loan_id, ext)  # noqa: E731
        elif action == "waive":
            waiver = inputs.waiver_input(agent, form.get("component", ""),
                                         form.get("amount", ""), currency,
                                         form.get("reason") or None)
            run = lambda: updates.waive(client, loan_id, waiver)  # noqa: E731
        elif action == "settle":
            offer = inputs.settlement_input(agent, form.get("amount", ""), currency,
                                            form.get("pay_by", ""))
            run = lambda: updates.settle(client, loan_id, offer)  # noqa: E731
        else:
            raise BadInput("action", "must be plan, extend, waive or settle")
        answer = await run()
    except ServiceError as err:
        return await _screen(v, claim, status=422, error=_explain(v, err))
    return await _screen(v, claim, message=v.t("accepted", message=answer.message))

