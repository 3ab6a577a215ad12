"""Backtests on the cluster (workflows/lab_workflow.py): start one, read its progress, wait for
its figures.

A run's workflow id comes from its input (`lab-<digest>`): starting the same backtest again
attaches to it, running or finished, rather than playing the book twice; only a run that failed
(or was cancelled, terminated or timed out) is played again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import timedelta
from typing import Final

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from contracts.lab_run import LabProgress, LabRunInput, LabRunResult
from contracts.names import (
    LAB_PROGRESS_QUERY,
    LAB_TASK_QUEUE,
    LAB_WORKFLOW_TYPE,
    lab_workflow_id,
)
from service.errors import NotFound, Refused, ServiceError, Unreachable

# A backtest that has not finished by then is ended by the server (a lost cluster, not a slow
# book: a 10,000-loan book takes minutes).
RUN_TIMEOUT: Final = timedelta(days=1)
QUERY_TIMEOUT: Final = timedelta(seconds=5)


def run_name(run: LabRunInput) -> str:
    """The run's name: a digest of everything that decides its figures."""
    text = json.dumps(asdict(run), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _error(err: RPCError, workflow_id: str) -> ServiceError:
    if err.status == RPCStatusCode.NOT_FOUND:
        return NotFound(f"no lab run {workflow_id}")
    return Unreachable(f"lab run {workflow_id}: Temporal did not answer ({err.status.name})")


def _handle(client: Client, workflow_id: str) -> WorkflowHandle[object, LabRunResult]:
    return client.get_workflow_handle(workflow_id, result_type=LabRunResult)


async def start(client: Client, run: LabRunInput, *, task_queue: str = LAB_TASK_QUEUE) -> str:
    """Start the backtest (or find it, running or finished); its workflow id."""
    workflow_id = lab_workflow_id(run_name(run))
    try:
        await client.start_workflow(
            LAB_WORKFLOW_TYPE, run, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            execution_timeout=RUN_TIMEOUT)
    except WorkflowAlreadyStartedError:
        pass  # finished: its figures are there to read
    except RPCError as err:
        raise _error(err, workflow_id) from None
    return workflow_id


async def progress(client: Client, workflow_id: str) -> LabProgress:
    """Shards done of all; answered by a lab worker, so none running means Unreachable."""
    try:
        answer: LabProgress = await _handle(client, workflow_id).query(
            LAB_PROGRESS_QUERY, result_type=LabProgress, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        raise _error(err, workflow_id) from None
    return answer


async def result(client: Client, workflow_id: str) -> LabRunResult:
    """The figures, once every shard is in; a run that failed is refused with its cause."""
    try:
        return await _handle(client, workflow_id).result()
    except WorkflowFailureError as err:
        # The innermost cause: the shard's or the figures' own error, not its wrappers.
        cause: BaseException = err.cause
        while isinstance(cause, FailureError) and cause.cause is not None:
            cause = cause.cause
        raise Refused(f"lab run {workflow_id} failed: {cause}") from None
    except RPCError as err:
        raise _error(err, workflow_id) from None
