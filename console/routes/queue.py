"""The agents' queue: open tasks by priority and due time, whether a call is allowed now, and
claiming one (refused outside the calling window, as the button says)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from console.casework import borrower_of, queue_row
from console.web import ConsoleRoute, Denied, checked_form, redirect, require
from lab.queue_model import queue_model
from service import task_claims, tasks
from service.errors import Conflict, NotFound

router = APIRouter(route_class=ConsoleRoute)
QUEUE_SIZE = 50


@router.get("/queue")
async def queue(request: Request) -> Response:
    v = require(request, "agent", "operator")
    # With a behaviour model configured, ranked by the amount a call is expected to recover.
    model = queue_model(v.services().connections.settings.collect_queue_model)
    open_tasks = await tasks.open_tasks(v.services().dsn(), limit=QUEUE_SIZE, model=model)
    holders = await task_claims.holders(v.pool, [t.task_key for t in open_tasks])
    client = await v.temporal()
    rows = await asyncio.gather(*(queue_row(client, t, holders.get(t.task_key))
                                  for t in open_tasks))
    message = request.query_params.get("message")
    return v.page("queue.html", rows=rows, expected=model is not None,
                  message=v.t(message) if message == "claim_lost" else None)


@router.post("/tasks/claim")
async def claim(request: Request) -> Response:
    v = require(request, "agent")
    form = await checked_form(v)
    task_key = form.get("task_key", "")
    open_tasks = {t.task_key: t for t in await tasks.open_tasks(v.services().dsn(),
                                                                limit=tasks.MAX_TASKS)}
    task = open_tasks.get(task_key)
    if task is None:
        raise Denied(404, "not_found")
    client = await v.temporal()
    row = await queue_row(client, task, None)
    if row.window is None or not row.window.allowed:
        # The button is disabled; a hand-made post is refused the same way.
        raise Denied(409, "claim_disabled", rule=row.window.rule if row.window else "?",
                     when=row.window.next_allowed if row.window else "?")
    try:
        await task_claims.claim_task(v.pool, task_key, v.name)
    except (Conflict, NotFound):
        return redirect("/console/queue?message=claim_lost")
    await borrower_of(client, task.loan_id)
    return redirect(f"/console/call?task={task_key}")

