"""Calling one case's workflow, and the server's answers turned into service errors by kind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from contracts.names import CASE_STATE, workflow_id_for
from infra.codec import CodecError
from service.errors import (
    BadInput,
    CaseClosed,
    Conflict,
    NotFound,
    Refused,
    ServiceError,
    Unreachable,
)

T = TypeVar("T")

# How long a call waits for the workflow to answer: updates and queries need a running worker.
ANSWER_TIMEOUT: Final = 30.0
_UNREACHABLE: Final = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})
# Errors that say nothing about the request itself: a server restarting or overloaded. They are
# "unreachable" (try again), never a refusal: a caller told "refused" stops retrying, and a
# payment answered that way during a dev-server restart was lost in the soak.
_TRANSIENT: Final = frozenset({RPCStatusCode.UNKNOWN, RPCStatusCode.INTERNAL,
                               RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.CANCELLED})
_CONFLICT: Final = frozenset(
    {RPCStatusCode.ALREADY_EXISTS, RPCStatusCode.ABORTED, RPCStatusCode.FAILED_PRECONDITION})


def handle(client: Client, loan_id: str) -> WorkflowHandle[Any, Any]:
    # By id and by the names in contracts.names, not by the workflow class: the service never
    # needs the workflow's code to talk to a case.
    return client.get_workflow_handle(workflow_id_for(loan_id))


def not_found(loan_id: str) -> NotFound:
    return NotFound(f"no collection case for loan {loan_id}")


def rpc_error(err: RPCError, loan_id: str) -> ServiceError:
    if err.status in _UNREACHABLE:
        return Unreachable("cannot reach Temporal: is the worker running? (make run)")
    if err.status in _TRANSIENT:
        return Unreachable(f"loan {loan_id}: Temporal did not complete the request "
                           f"({err.status.name}); try again")
    if err.status == RPCStatusCode.NOT_FOUND:
        return not_found(loan_id)
    if err.status in _CONFLICT:
        return Conflict(f"loan {loan_id}: the request conflicts with the case ({err.status.name})")
    if err.status == RPCStatusCode.INVALID_ARGUMENT:
        return BadInput("request", f"loan {loan_id}: the server cannot use it ({err.status.name})")
    return Refused(f"loan {loan_id}: the server refused the request ({err.status.name})")


async def closed_or_unknown(client: Client, loan_id: str) -> ServiceError:
    """The error for a NOT_FOUND from the server: no such case, or a case that has closed."""
    try:
        desc = await handle(client, loan_id).describe()
    except RPCError as err:
        return rpc_error(err, loan_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return Conflict(f"case for loan {loan_id} did not accept the request; try again")
    # The case's own final state (paid, settled, ...), unless its run was ended from outside
    # (terminated, timed out) while the case was still active.
    state = desc.typed_search_attributes.get(CASE_STATE)
    if state in (None, "active"):
        state = desc.status.name.lower() if desc.status else "closed"
    return CaseClosed(f"case for loan {loan_id} is closed ({state})")


async def answer(call: Awaitable[T], loan_id: str, within: float) -> T:
    """Await a call the workflow itself must answer, which needs a worker to be running."""
    try:
        async with asyncio.timeout(within):
            return await call
    except TimeoutError:
        raise Unreachable(
            f"no answer from the case for loan {loan_id} within {within:g}s: is the worker "
            "running? (make run)"
        ) from None
    except CodecError as err:  # this process holds other keys than the worker's
        raise BadInput("COLLECTIONS_ENCRYPTION_KEYS",
                       f"cannot decode the answer for loan {loan_id}: {err}") from None
