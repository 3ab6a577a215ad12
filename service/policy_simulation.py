"""What a policy would do to a loan: its whole case, run now, on a private time-skipping server.

The real workflow runs in simulation mode (workflows/simulation.py): the policy the loan would
pin, its ladder, contact windows and caps, on durable timers that the test server skips through,
so 180 days take well under a second. Nothing is sent or written and no cluster, database or
provider is needed: an operator can try a policy file before any loan follows it.
"""

from __future__ import annotations

from typing import Final

from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.worker import Worker

from activities.policies import resolve
from contracts.case_io import CollectionInput
from contracts.messages import CaseResult, LoanInput
from contracts.names import WORKFLOW_TYPE
from infra.codec import data_converter
from infra.temporal_server import start_test_server
from policies import loader as policy_loader
from service.errors import BadInput
from workflows.collection_workflow import CollectionWorkflow
from workflows.sandbox import sandbox_runner  # the runner the real workers use

QUEUE: Final = "simulation"


async def simulate(loan: LoanInput) -> CaseResult:
    """The loan's case from now until it closes (written off, unless its policy ends otherwise)."""
    try:
        policy = resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        raise BadInput("policy", str(err).splitlines()[0]) from None
    env = await start_test_server(data_converter=data_converter(None))
    try:
        async with Worker(env.client, task_queue=QUEUE, workflows=[CollectionWorkflow],
                          workflow_runner=sandbox_runner()):
            with env.auto_time_skipping_disabled():
                handle = await env.client.start_workflow(
                    WORKFLOW_TYPE, CollectionInput(loan=loan, policy=policy, simulate=True),
                    id=f"simulation-{loan.loan_id}", task_queue=QUEUE, result_type=CaseResult)
                # Skip time only while waiting for the result (the unlock-once pattern).
                await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
                try:
                    result: CaseResult = await handle.result()
                    return result
                finally:
                    await env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
    finally:
        await env.shutdown()
