"""The agents' work queue, claims on its tasks, one task with the borrower's contact details (in
full only to the agent holding the claim, every reveal in the access log), and the outcome of a
call or visit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.auth import Agent, allow
from api.bodies import TaskOutcomeBody, Text
from api.deps import Db, Svc, Temporal
from api.encoding import plain
from api.keys import ApiKey, Role
from api.problems import problem_body
from api.responses import READ_ERRORS, WRITE_ERRORS
from api.writes import AgentWrite, Answer
from contracts.messages import UpdateResult
from lab.queue_model import queue_model
from service import inputs, queue_priority, task_claims, updates
from service import tasks as work_queue
from service.errors import Conflict
from service.task_access import task_view
from service.values import parse_label, parse_loan_id

router = APIRouter(prefix="/v1/tasks", tags=["agents"])
TaskKey = Annotated[str, Field(max_length=200)]


class ClaimAnswer(BaseModel):
    task_key: str
    loan_id: str
    agent: str
    lease_until: datetime = Field(description="the claim lapses then unless claimed again")


class ReleaseAnswer(BaseModel):
    task_key: str
    loan_id: str
    released_by: str = Field(description="the agent whose claim ended")


class TaskContact(BaseModel):
    phone: str = Field(description="in full only to the agent holding the claim, else masked")
    email: str = Field(description="always masked")
    address: str | None = Field(None, description="the postal address, for loans with one")
    revealed: bool


class TaskDetail(BaseModel):
    task_key: str
    loan_id: str
    kind: str
    step_id: str
    priority: int
    due_by: datetime
    status: str = Field(description="open, done, expired or withdrawn")
    outcome: str | None
    held_by: str | None = Field(description="the agent holding a live claim, if any")
    lease_until: datetime | None
    contact: TaskContact


class OutcomeBody(TaskOutcomeBody):
    at: Text | None = Field(None, description="when the call or visit happened (ISO 8601 with "
                                              "offset); default: when it is reported")


def _key(task_key: str) -> str:
    return parse_label(task_key, "task_key", 200)


@router.get("", response_model=list[work_queue.TaskRow], responses=READ_ERRORS)
async def queue(agent: Agent, svc: Svc,
                kind: Annotated[str | None, Query(max_length=10,
                                                  description="call or visit")] = None,
                limit: Annotated[int, Query(ge=1, le=work_queue.MAX_TASKS)] = 50,
                order: Annotated[str | None, Query(
                    max_length=10, description=f"{' or '.join(queue_priority.ORDERS)}; default "
                    "expected with a behaviour model configured (COLLECT_QUEUE_MODEL), else due"),
                ] = None,
                ) -> list[work_queue.TaskRow]:
    """Open call and visit tasks, most urgent first (highest priority, earliest deadline). With
    a behaviour model configured, each task carries `expected_per_call`, the amount a call is
    expected to recover, and the queue is ranked by it unless `order=due`."""
    model = queue_model(svc.connections.settings.collect_queue_model)
    return await work_queue.open_tasks(svc.dsn(), kind=kind, limit=limit, model=model,
                                       order=order)


@router.post("/{task_key:path}/claim", response_model=ClaimAnswer,
             responses=WRITE_ERRORS)
async def claim(task_key: str, write: AgentWrite, pool: Db) -> Response:
    """Hold an open task for 30 minutes, so no other agent works it (409 while another agent
    holds it; claiming it again renews the lease). A claim not worked lapses on its own."""
    key = _key(task_key)

    async def run() -> Answer:
        held = await task_claims.claim_task(pool, key, write.caller.name)
        return Answer(200, plain(ClaimAnswer(task_key=held.task_key, loan_id=held.loan_id,
                                             agent=held.agent, lease_until=held.lease_until)),
                      [(held.loan_id, f"claimed {held.task_key}")])

    return await write.once("claim", None, run)


@router.post("/{task_key:path}/release", response_model=ReleaseAnswer,
             responses=WRITE_ERRORS)
async def release(task_key: str, write: AgentWrite, pool: Db) -> Response:
    """Give back a task you hold: it is back in the queue at once for any agent. 403 if another
    agent holds it, 409 if nobody does (never claimed, lapsed or released already)."""
    key = _key(task_key)

    async def run() -> Answer:
        try:
            held = await task_claims.release_claim(pool, key, write.caller.name)
        except task_claims.NotTheHolder as err:
            # Kept and audited like any answer, as 403: the claim is not the caller's to end.
            return Answer(403, problem_body(403, "forbidden", str(err)),
                          [(err.loan_id, f"forbidden: {err}")])
        return Answer(200, plain(ReleaseAnswer(task_key=held.task_key, loan_id=held.loan_id,
                                               released_by=held.agent)),
                      [(held.loan_id, f"released {held.task_key}")])

    return await write.once("release", None, run)


@router.get("/{task_key:path}", response_model=TaskDetail, responses=READ_ERRORS)
async def task(task_key: str, caller: Annotated[ApiKey, Depends(allow(Role.AGENT,
                                                                      Role.OPERATOR))],
               pool: Db, client: Temporal) -> TaskDetail:
    """One task. The borrower's phone (and address) in full only to the agent holding its claim,
    and each such answer is written to the access log; everybody else sees them masked."""
    viewer = caller.name if caller.role == Role.AGENT else None
    view = await task_view(pool, client, _key(task_key), viewer=viewer, surface="api")
    return TaskDetail.model_validate(plain(view))


@router.post("/{task_key:path}/outcome", response_model=UpdateResult, responses=WRITE_ERRORS)
async def outcome(task_key: str, body: OutcomeBody, write: AgentWrite, pool: Db,
                  client: Temporal) -> Response:
    """Report what happened on a call or visit, and when; the case acts on it (a promise, a
    wrong number). 409 while another agent holds the task's claim."""
    case = parse_loan_id(body.loan_id, "loan_id")
    arg = inputs.task_outcome_input(task_key, body.outcome, write.caller.name, body.note,
                                    at=body.at)

    async def run() -> UpdateResult:
        holder = (await task_claims.holders(pool, [arg.task_key])).get(arg.task_key)
        if holder is not None and holder != write.caller.name:
            raise Conflict(f"task {arg.task_key} is held by another agent")
        return await updates.task_outcome(client, case, arg)

    return await write.update("task_outcome", case, run)
