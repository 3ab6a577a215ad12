"""Opening cases, reporting payments, and reading one case: what the loan system and operators ask.

    client = await connect()
    await start_loan(client, loan)        # "started", "already running" or "already closed"
    (await pay(client, "L1", PaymentInput(...))).status   # applied, duplicate or unapplied
    print((await status(client, "L1")).outstanding)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from contracts.case_io import CollectionInput
from contracts.messages import (
    CaseResult,
    CaseStatus,
    LoanInput,
    PaymentInput,
    PaymentResult,
    TimelineEvent,
)
from contracts.names import TASK_QUEUE, WORKFLOW_TYPE, Query, Signal, Update, workflow_id_for
from service.case_calls import (
    ANSWER_TIMEOUT,
    answer,
    closed_or_unknown,
    handle,
    not_found,
    rpc_error,
)
from service.errors import Refused, ServiceError, Unreachable
from service.updates import execute
from service.vault import Vault

T = TypeVar("T")

OUTCOMES: Final = ("started", "already running", "already closed", "refused")


# --------------------------------------------------------------------------- starting


async def _start_case(client: Client, loan: LoanInput, task_queue: str, **options: Any) -> None:
    """Start the loan's case under its own workflow id; a duplicate id is rejected by the server
    even after the first run has closed. `options` add to what `start_workflow` is given."""
    await client.start_workflow(
        WORKFLOW_TYPE,
        CollectionInput(loan=loan),
        id=workflow_id_for(loan.loan_id),
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        result_type=CaseResult,
        **options,
    )


async def start_loan(client: Client, loan: LoanInput, *, task_queue: str = TASK_QUEUE,
                     vault: Vault | None = None) -> str:
    """Open the case for `loan`: "started", or "already running" / "already closed" (no new run).

    The workflow id comes from the loan id, and a duplicate is rejected by the server even after
    the first run has closed, so starting a loan twice never creates a second case. With a
    `vault`, the borrower's personal fields are stored there and the case gets only a reference
    to them (issue 18).
    """
    created = False
    if vault is not None:
        loan, created = await vault.store(loan)
    try:
        await _start_case(client, loan, task_queue)
        return "started"
    except WorkflowAlreadyStartedError:
        if created and vault is not None:  # the case exists with an input of its own
            await vault.discard(loan.loan_id)
    except RPCError as err:
        raise rpc_error(err, loan.loan_id) from None
    try:
        desc = await handle(client, loan.loan_id).describe()
    except RPCError as err:
        raise rpc_error(err, loan.loan_id) from None
    return "already running" if desc.status == WorkflowExecutionStatus.RUNNING else "already closed"


@dataclass(frozen=True)
class StartResult:
    """What happened to one loan of a bulk start; `error` is set when the outcome is "refused"."""

    loan_id: str
    outcome: str
    error: str | None = None


class BulkStartError(Unreachable):
    """A bulk start stopped because the server went away; `counts` is what was done before."""

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = counts


async def start_many(
    client: Client,
    loans: Iterable[LoanInput],
    *,
    task_queue: str = TASK_QUEUE,
    concurrency: int = 50,
    on_progress: Callable[[StartResult], None] | None = None,
    batch_size: int | None = None,
    vault: Vault | None = None,
) -> dict[str, int]:
    """Start many loans, at most `concurrency` requests in flight; counts per outcome.

    Loans are taken from the iterable a batch at a time, so a generator of a million loans is
    never held in memory at once. A loan the server refuses counts as "refused" and the rest go
    on; losing the server stops the run with `BulkStartError`.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    counts = dict.fromkeys(OUTCOMES, 0)
    limit = asyncio.Semaphore(concurrency)

    async def one(loan: LoanInput) -> None:
        async with limit:
            try:
                result = StartResult(
                    loan.loan_id, await start_loan(client, loan, task_queue=task_queue,
                                                   vault=vault))
            except Unreachable:
                raise
            except ServiceError as err:
                result = StartResult(loan.loan_id, "refused", str(err))
        counts[result.outcome] += 1
        if on_progress is not None:
            on_progress(result)

    pending = iter(loans)
    while batch := list(itertools.islice(pending, batch_size or concurrency * 10)):
        results = await asyncio.gather(*(one(loan) for loan in batch), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if isinstance(failure, Unreachable):
            raise BulkStartError(str(failure), counts)
        if failure is not None:
            raise failure
    return counts


# --------------------------------------------------------------------------- payments


async def pay(client: Client, loan_id: str, payment: PaymentInput, *,
              answer_within: float = ANSWER_TIMEOUT) -> PaymentResult:
    """Report a payment to an existing case and get the case's answer: applied (to the balance,
    or as excess after the case closed), duplicate (this payment id was reported before: nothing
    changed) or unapplied (money received that cannot be applied, such as another currency: kept
    with the reason, never dropped).

    A malformed payment (blank id, a currency that is no ISO code) is `Refused` by the update's
    validator and leaves nothing in the case's history. Use `pay_with_start` when the payment may
    arrive before the loan's case has been started.
    """
    return await execute(client, loan_id, Update.PAY, payment, PaymentResult, answer_within)


async def pay_with_start(
    client: Client, loan: LoanInput, payment: PaymentInput, *, task_queue: str = TASK_QUEUE
) -> None:
    """Send a payment, opening the case first if it does not exist yet (signal-with-start).

    A payment that races the loan's first start is never lost: whichever arrives first opens the
    case, and the payment is applied once it has. A closed case is not reopened.
    """
    try:
        await _start_case(client, loan, task_queue,
                          id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                          start_signal=Signal.PAY, start_signal_args=[payment])
    except WorkflowAlreadyStartedError:
        raise await closed_or_unknown(client, loan.loan_id) from None
    except RPCError as err:
        raise rpc_error(err, loan.loan_id) from None


# --------------------------------------------------------------------------- one case


async def _query(
    client: Client, loan_id: str, query: Callable[[WorkflowHandle[Any, Any]], Awaitable[T]],
    answer_within: float,
) -> T:
    case = handle(client, loan_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + answer_within
    while True:
        try:
            return await answer(query(case), loan_id, max(deadline - loop.time(), 0.1))
        except WorkflowQueryFailedError as err:
            # The case answers once its policy is resolved, a moment after it starts.
            if "still opening" not in str(err) or loop.time() > deadline:
                raise Refused(f"case for loan {loan_id} cannot answer: {err}") from None
            await asyncio.sleep(0.2)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise not_found(loan_id) from None
            raise rpc_error(err, loan_id) from None


async def status(
    client: Client, loan_id: str, *, answer_within: float = ANSWER_TIMEOUT
) -> CaseStatus:
    """The case as it is now (answers for closed cases too, while a worker runs)."""
    return await _query(
        client, loan_id, lambda h: h.query(Query.STATUS, result_type=CaseStatus), answer_within)


async def timeline(
    client: Client, loan_id: str, *, answer_within: float = ANSWER_TIMEOUT
) -> list[TimelineEvent]:
    """Everything the case recorded, oldest first."""
    return await _query(
        client, loan_id, lambda h: h.query(Query.TIMELINE, result_type=list[TimelineEvent]),
        answer_within)
