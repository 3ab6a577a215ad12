"""The retention purge (issue 18): one run erases the personal data of every case whose retention
is over, except those under legal hold. A Temporal Schedule starts it daily
(service/retention.py); an operator may start one by hand.

Deterministic: the time is the workflow's (or the input's `as_of`), the work one idempotent
activity (activities/database/purge.py) keyed by this run, so a retry or a worker crash erases
nothing twice and writes one audit row.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contracts.retention import (
        PURGE_EXPIRED,
        PURGE_WORKFLOW,
        PurgeInput,
        PurgeRequest,
        PurgeResult,
    )


@workflow.defn(name=PURGE_WORKFLOW)
class RetentionPurgeWorkflow:
    @workflow.run
    async def run(self, inp: PurgeInput) -> PurgeResult:
        info = workflow.info()
        request = PurgeRequest(run_key=f"{info.workflow_id}/{info.run_id}",
                               as_of=inp.as_of or workflow.now(), actor=inp.actor)
        result: PurgeResult = await workflow.execute_activity(
            PURGE_EXPIRED, request, result_type=PurgeResult,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)))
        return result
