"""The agents' work queue and the outcome of a call or visit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.auth import Agent
from api.bodies import TaskOutcomeBody
from api.deps import Svc, Temporal
from api.responses import READ_ERRORS, WRITE_ERRORS
from api.writes import AgentWrite
from contracts.messages import UpdateResult
from service import inputs, updates
from service import tasks as work_queue
from service.values import parse_loan_id

router = APIRouter(prefix="/v1/tasks", tags=["agents"])


@router.get("", response_model=list[work_queue.TaskRow], responses=READ_ERRORS)
async def queue(agent: Agent, svc: Svc,
                kind: Annotated[str | None, Query(max_length=10,
                                                  description="call or visit")] = None,
                limit: Annotated[int, Query(ge=1, le=work_queue.MAX_TASKS)] = 50,
                ) -> list[work_queue.TaskRow]:
    """Open call and visit tasks, most urgent first (highest priority, earliest deadline)."""
    return await work_queue.open_tasks(svc.dsn(), kind=kind, limit=limit)


@router.post("/{task_key:path}/outcome", response_model=UpdateResult, responses=WRITE_ERRORS)
async def outcome(task_key: str, body: TaskOutcomeBody, write: AgentWrite,
                  client: Temporal) -> Response:
    """Report what happened on a call or visit; the case acts on it (a promise, a wrong number)."""
    case = parse_loan_id(body.loan_id, "loan_id")
    arg = inputs.task_outcome_input(task_key, body.outcome, write.caller.name, body.note)
    return await write.update("task_outcome", case,
                        lambda: updates.task_outcome(client, case, arg))
