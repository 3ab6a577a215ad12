"""What a person or another system can ask of the orchestrator, as plain async functions.

The command line (`starter.py`) and any later HTTP layer call these and nothing else, so neither
holds logic the other lacks. Nothing here prints. Every failure a caller should show is an
`OperationError` with a one-line message that never quotes a borrower's name, phone or e-mail:
loans are named by their loan id only.

    client = await connect()
    await start_loan(client, loan)                 # "started", "already running" or "already closed"
    await update(client, "L1", "promise", PromiseInput(...))
    print((await status(client, "L1")).outstanding)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any, Final, TypeVar

import asyncpg
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.policies import resolve
from activities.templates import known_templates
from infra.codec import CodecError
from infra.settings import Settings
from infra.stack import connect_temporal, read_endpoints
from policies import compliance
from policies import loader as policy_loader
from contracts.case_io import CollectionInput
from workflows.collection_workflow import CollectionWorkflow
from contracts.messages import CaseStatus, LoanInput, PaymentInput, TimelineEvent, UpdateResult
from contracts.names import CASE_STATE, TASK_QUEUE, workflow_id_for

T = TypeVar("T")

DEFAULT_ADDRESS: Final = "127.0.0.1:7233"
KEY_FILE: Final = "encryption.key"
# The updates CollectionWorkflow accepts, by name (each takes one input dataclass).
UPDATES: Final = frozenset(
    {"promise", "plan", "extend", "waive", "settle", "hold", "resolve", "cease", "close",
     "task_outcome"}
)
OUTCOMES: Final = ("started", "already running", "already closed", "refused")
# How long a call waits for the workflow to answer: updates and queries need a running worker.
ANSWER_TIMEOUT: Final = 30.0
_UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}


class OperationError(Exception):
    """A request could not be carried out; `str()` is one line, free of borrower data."""


class UnreachableError(OperationError):
    """The server (Temporal or PostgreSQL) cannot be reached: nothing else will work either."""


# --------------------------------------------------------------------------- connecting


def _key_file(settings: Settings) -> Path | None:
    """The local stack's key file, only if it exists: `codec_from_env` would create a new one."""
    path = settings.state_dir / KEY_FILE
    return path if path.is_file() else None


async def connect(settings: Settings | None = None) -> Client:
    """A client for the configured Temporal, else for the running local stack (`make run`)."""
    settings = settings or Settings()
    if settings.temporal_address is None:
        endpoints = read_endpoints(settings.state_dir) or {}
        settings = settings.model_copy(update={
            "temporal_address": endpoints.get("temporal_address") or DEFAULT_ADDRESS,
            "temporal_namespace": endpoints.get("namespace") or settings.temporal_namespace,
        })
    address = settings.temporal_address
    try:
        return await connect_temporal(settings, key_file=_key_file(settings))
    except ValueError as err:  # malformed keys; the message names the entry, never the key
        raise OperationError(f"encryption keys unusable: {err}") from None
    except OSError as err:  # a TLS file that cannot be read
        raise OperationError(f"cannot read TLS file {err.filename}: {err.strerror}") from None
    except RuntimeError:  # the SDK's "Failed client connect: ..."
        raise UnreachableError(
            f"cannot reach Temporal at {address}: is the worker running? (make run)"
        ) from None


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL, else the running local stack's PostgreSQL."""
    settings = settings or Settings()
    if settings.database_url:
        return settings.database_url
    dsn = (read_endpoints(settings.state_dir) or {}).get("dsn")
    if not dsn:
        raise OperationError("no database: set DATABASE_URL or start the local stack (make run)")
    return dsn


# --------------------------------------------------------------------------- errors


def _handle(client: Client, loan_id: str) -> WorkflowHandle[CollectionWorkflow, Any]:
    return client.get_workflow_handle_for(CollectionWorkflow.run, workflow_id_for(loan_id))


async def _closed_or_unknown(client: Client, loan_id: str) -> OperationError:
    """The error for a NOT_FOUND from the server: no such case, or a case that has closed."""
    try:
        desc = await _handle(client, loan_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return OperationError(f"no collection case for loan {loan_id}")
        return _rpc_error(err, loan_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return OperationError(f"case for loan {loan_id} did not accept the request; try again")
    # The case's own final state (paid, settled, ...), unless its run was ended from outside
    # (terminated, timed out) while the case was still active.
    state = desc.typed_search_attributes.get(CASE_STATE)
    if state in (None, "active"):
        state = desc.status.name.lower() if desc.status else "closed"
    return OperationError(f"case for loan {loan_id} is closed ({state})")


def _rpc_error(err: RPCError, loan_id: str) -> OperationError:
    if err.status in _UNREACHABLE:
        return UnreachableError("cannot reach Temporal: is the worker running? (make run)")
    return OperationError(f"loan {loan_id}: the server refused the request ({err.status.name})")


async def _answer(call: Awaitable[T], loan_id: str, timeout: float) -> T:
    """Await a call the workflow itself must answer, which needs a worker to be running."""
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise OperationError(
            f"no answer from the case for loan {loan_id} within {timeout:g}s: is the worker "
            "running? (make run)"
        ) from None
    except CodecError as err:  # this process holds other keys than the worker's
        raise OperationError(f"cannot decode the answer for loan {loan_id}: {err}") from None


# --------------------------------------------------------------------------- starting


async def start_loan(client: Client, loan: LoanInput, *, task_queue: str = TASK_QUEUE) -> str:
    """Open the case for `loan`: "started", or "already running" / "already closed" (no new run).

    The workflow id comes from the loan id, and a duplicate is rejected by the server even after
    the first run has closed, so starting a loan twice never creates a second case.
    """
    try:
        await client.start_workflow(
            CollectionWorkflow.run,
            CollectionInput(loan=loan),
            id=workflow_id_for(loan.loan_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return "started"
    except WorkflowAlreadyStartedError:
        pass
    except RPCError as err:
        raise _rpc_error(err, loan.loan_id) from None
    try:
        desc = await _handle(client, loan.loan_id).describe()
    except RPCError as err:
        raise _rpc_error(err, loan.loan_id) from None
    return "already running" if desc.status == WorkflowExecutionStatus.RUNNING else "already closed"


@dataclass(frozen=True)
class StartResult:
    """What happened to one loan of a bulk start; `error` is set when the outcome is "refused"."""

    loan_id: str
    outcome: str
    error: str | None = None


class BulkStartError(UnreachableError):
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
                result = StartResult(loan.loan_id, await start_loan(client, loan, task_queue=task_queue))
            except UnreachableError:
                raise
            except OperationError as err:
                result = StartResult(loan.loan_id, "refused", str(err))
        counts[result.outcome] += 1
        if on_progress is not None:
            on_progress(result)

    pending = iter(loans)
    while batch := list(itertools.islice(pending, batch_size or concurrency * 10)):
        results = await asyncio.gather(*(one(loan) for loan in batch), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if isinstance(failure, UnreachableError):
            raise BulkStartError(str(failure), counts)
        if failure is not None:
            raise failure
    return counts


# --------------------------------------------------------------------------- payments


async def pay(client: Client, loan_id: str, payment: PaymentInput) -> None:
    """Send a payment to an existing case (fire-and-forget; a repeated payment id is ignored)."""
    try:
        await _handle(client, loan_id).signal(CollectionWorkflow.pay, payment)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise await _closed_or_unknown(client, loan_id) from None
        raise _rpc_error(err, loan_id) from None


async def pay_with_start(
    client: Client, loan: LoanInput, payment: PaymentInput, *, task_queue: str = TASK_QUEUE
) -> None:
    """Send a payment, opening the case first if it does not exist yet (signal-with-start).

    A payment that races the loan's first start is never lost: whichever arrives first opens the
    case, and the payment is applied once it has. A closed case is not reopened.
    """
    try:
        await client.start_workflow(
            CollectionWorkflow.run,
            CollectionInput(loan=loan),
            id=workflow_id_for(loan.loan_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="pay",
            start_signal_args=[payment],
        )
    except WorkflowAlreadyStartedError:
        raise await _closed_or_unknown(client, loan.loan_id) from None
    except RPCError as err:
        raise _rpc_error(err, loan.loan_id) from None


# --------------------------------------------------------------------------- updates, queries


async def update(
    client: Client, loan_id: str, name: str, arg: Any, *, timeout: float = ANSWER_TIMEOUT
) -> UpdateResult:
    """Run one of the case's updates (`promise`, `plan`, ...) and return its answer.

    A refusal by the workflow becomes an `OperationError` carrying the workflow's own reason.
    """
    if name not in UPDATES:
        raise ValueError(f"unknown update {name!r} (one of {', '.join(sorted(UPDATES))})")
    handle = _handle(client, loan_id)
    try:
        return await _answer(
            handle.execute_update(name, arg, result_type=UpdateResult), loan_id, timeout
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise OperationError(reason.splitlines()[0] if reason else "refused") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise await _closed_or_unknown(client, loan_id) from None
        raise _rpc_error(err, loan_id) from None


async def _query(
    client: Client, loan_id: str, query: Callable[[WorkflowHandle[Any, Any]], Awaitable[T]],
    timeout: float,
) -> T:
    handle = _handle(client, loan_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _answer(query(handle), loan_id, max(deadline - loop.time(), 0.1))
        except WorkflowQueryFailedError as err:
            # The case answers once its policy is resolved, a moment after it starts.
            if "still opening" not in str(err) or loop.time() > deadline:
                raise OperationError(f"case for loan {loan_id} cannot answer: {err}") from None
            await asyncio.sleep(0.2)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise OperationError(f"no collection case for loan {loan_id}") from None
            raise _rpc_error(err, loan_id) from None


async def status(client: Client, loan_id: str, *, timeout: float = ANSWER_TIMEOUT) -> CaseStatus:
    """The case as it is now (answers for closed cases too, while a worker runs)."""
    return await _query(client, loan_id, lambda h: h.query(CollectionWorkflow.status), timeout)


async def timeline(
    client: Client, loan_id: str, *, timeout: float = ANSWER_TIMEOUT
) -> list[TimelineEvent]:
    """Everything the case recorded, oldest first."""
    return await _query(client, loan_id, lambda h: h.query(CollectionWorkflow.timeline), timeout)


# --------------------------------------------------------------------------- agent tasks


@dataclass(frozen=True)
class TaskRow:
    task_key: str
    loan_id: str
    kind: str
    step_id: str
    priority: int
    due_by: datetime


async def open_tasks(dsn: str, *, kind: str | None = None, limit: int = 50) -> list[TaskRow]:
    """Open call and visit tasks, most urgent first (highest priority, earliest deadline)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as err:
        raise UnreachableError(f"cannot reach the database: {type(err).__name__}") from None
    try:
        rows = await conn.fetch(
            "SELECT task_key, loan_id, kind, step_id, priority, due_by FROM tasks "
            "WHERE status = 'open' AND ($1::text IS NULL OR kind = $1) "
            "ORDER BY priority DESC, due_by, id LIMIT $2",
            kind, limit,
        )
    finally:
        await conn.close()
    return [TaskRow(**dict(r)) for r in rows]


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicySummary:
    name: str
    version: str
    rule_pack: str
    description: str
    segments: list[tuple[str, str]]  # (segment, ladder), in matching order
    steps: dict[str, int]  # ladder -> number of steps


def list_policies() -> list[PolicySummary]:
    """The shipped policies, as `policy list` shows them."""
    try:
        policies = policy_loader.load_policies(templates=known_templates())
    except policy_loader.PolicyError as err:
        raise OperationError(str(err)) from None
    return [
        PolicySummary(
            name=p.name, version=p.version, rule_pack=p.rule_pack, description=p.description,
            segments=[(s.name, s.ladder) for s in p.segments],
            steps={ladder: len(steps) for ladder, steps in p.ladders.items()},
        )
        for p, _digest in policies.values()
    ]


def validate_policies(paths: Sequence[Path | str]) -> list[str]:
    """One line per problem in the given policy or rule-pack files (empty when all are good)."""
    return policy_loader.validate_files(paths, templates=known_templates())


@dataclass(frozen=True)
class PlannedContact:
    step_id: str
    stage: str
    kind: str
    channels: list[str]
    template: str | None
    planned: datetime  # UTC: the ladder's day and hour, in the borrower's zone
    at: datetime  # UTC: when the rule pack first allows it
    local: datetime  # `at` in the borrower's zone
    deferred_by: str | None  # the rule that moved it, if any
    condition: str | None  # balance bounds, if the step has any


@dataclass(frozen=True)
class Explanation:
    loan_id: str
    policy_name: str
    policy_version: str
    segment: str
    ladder: str
    rule_pack: str
    rule_pack_description: str
    window: tuple[time, time]
    timezone: str
    contacts: list[PlannedContact] = field(default_factory=list)
    past_steps: int = 0  # steps whose time has passed (a case opened now runs the latest of them)


def explain(loan: LoanInput, *, now: datetime, count: int = 8) -> Explanation:
    """The policy a case for `loan` would pin and its next `count` contacts, as of `now`.

    Times pass through the rule pack's contact window and quiet days, as the workflow applies
    them; contact caps depend on contacts not yet made and are not shown.
    """
    try:
        policy = resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        raise OperationError(str(err).splitlines()[0]) from None
    pack, tz = policy.rule_pack, loan.timezone
    contacts: list[PlannedContact] = []
    past = 0
    for step in policy.steps:
        planned = compliance.step_instant(loan.due_date, step.day, step.hour, tz)
        if planned < now:
            past += 1
            continue
        if len(contacts) >= count:
            continue
        at, rule = compliance.next_allowed(planned, tz, pack)
        bounds = []
        if step.min_outstanding is not None:
            bounds.append(f"balance >= {step.min_outstanding}")
        if step.max_outstanding is not None:
            bounds.append(f"balance < {step.max_outstanding}")
        contacts.append(PlannedContact(
            step_id=step.id, stage=step.stage.value, kind=step.kind, channels=list(step.channels),
            template=step.template, planned=planned, at=at, local=compliance.local(at, tz),
            deferred_by=rule, condition=" and ".join(bounds) or None,
        ))
    return Explanation(
        loan_id=loan.loan_id, policy_name=policy.name, policy_version=policy.version,
        segment=policy.segment, ladder=policy.ladder_name, rule_pack=pack.name,
        rule_pack_description=pack.description, window=(pack.window_start, pack.window_end),
        timezone=tz, contacts=contacts, past_steps=past,
    )
