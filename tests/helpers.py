"""Test helpers: loans, pinned policies, starting cases, waiting for eventually consistent reads,
and `Case`, one started case with the readings the end-to-end tests make of it."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.testing import WorkflowEnvironment

from activities.policies import resolve
from bench.common import make_loan as bench_loan
from contracts.case_io import CollectionInput
from contracts.messages import CaseResult, CaseStatus, CloseInput, LoanInput, PaymentInput
from contracts.names import WORKFLOW_TYPE, workflow_id_for
from contracts.policy import ResolvedPolicy
from infra.emulator import ProviderEmulator
from workflows.collection_workflow import CollectionWorkflow

T = TypeVar("T")

SHANGHAI = timedelta(hours=8)  # the default test borrower's UTC offset (no DST)


def make_loan(loan_id: str, due: date, **overrides: Any) -> LoanInput:
    """The benchmarks' loan (`bench.common.make_loan`), on a random phone of its own so that the
    contact caps of one test never count another's messages."""
    overrides.setdefault("phone", "+86138" + "".join(random.choices("0123456789", k=8)))
    return bench_loan(loan_id, due, 0, **overrides)


def pinned(loan: LoanInput, **settings: Any) -> ResolvedPolicy:
    """The policy the loan would get, with settings changed for a test."""
    policy = resolve(loan)
    if settings:
        policy = policy.model_copy(update={"settings": policy.settings.model_copy(update=settings)})
    return policy


async def start_case(client: Client, loan: LoanInput, task_queue: str,
                     policy: ResolvedPolicy | None = None) -> WorkflowHandle[Any, Any]:
    # By type name, as callers start a case (service.cases): the run method takes the workflow's
    # CaseInput, which adds the state a case carries through continue-as-new.
    return await client.start_workflow(
        WORKFLOW_TYPE,
        CollectionInput(loan=loan, policy=policy),
        id=workflow_id_for(loan.loan_id),
        task_queue=task_queue,
        result_type=CaseResult,
    )


async def result_of(handle: WorkflowHandle[Any, Any]) -> Any:
    """The workflow's result, waiting through the time-skipping server's empty long polls: with
    other cases' timers on the session's server it may skip past a poll's deadline while this
    case waits on an activity, and the SDK then gives up with "No completion event found"."""
    while True:
        try:
            return await handle.result()
        except RuntimeError as err:
            if "No completion event found" not in str(err):
                raise


async def eventually(fn: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     timeout: float = 15.0,  # noqa: ASYNC109 - a polling deadline, reported with the last value
                     interval: float = 0.1) -> T:
    """Poll `fn` until `check` holds: for visibility and other eventually consistent reads."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fn()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)


def today_of(now: Any) -> date:
    return (now + SHANGHAI).date()  # Asia/Shanghai, the default test borrower's zone


# ----------------------------------------------------------------------- servers of a test


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A 0755 folder, removed afterwards. Not under pytest's 0700 tmp: run as root, PostgreSQL
    runs as its own system user and must be able to reach its data folder."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_emulator(emu: ProviderEmulator | None = None,
                           ) -> AsyncIterator[ProviderEmulator]:
    """`emu` (a fresh provider emulator by default) started, and stopped afterwards."""
    emu = emu or ProviderEmulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@asynccontextmanager
async def shut_down_after(env: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """A started Temporal server, shut down afterwards."""
    try:
        yield env
    finally:
        await env.shutdown()


# ------------------------------------------------------------------ time on the test server


async def at_local(env: WorkflowEnvironment, hour: int) -> tuple[datetime, date]:
    """Skip to the next `hour`:00 local time (at least an hour away); return (now, local today)."""
    now = await env.get_current_time()
    local = now + SHANGHAI
    target = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    while target - local < timedelta(hours=1):
        target += timedelta(days=1)
    await env.sleep(target - local)
    now = await env.get_current_time()
    return now, today_of(now)


def utc_at(day: date, hour: int) -> datetime:
    """`hour`:00 local (Asia/Shanghai) on `day`, as a UTC instant."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - SHANGHAI


def near(at: datetime, expected: datetime, tolerance: timedelta = timedelta(minutes=1)) -> bool:
    """Equal up to the real seconds that pass while nothing skips time."""
    return abs(at - expected) <= tolerance


async def settle_down() -> None:
    """Give the recorder a moment when nothing observable is expected to change."""
    await asyncio.sleep(0.3)


# --------------------------------------------------------------------------------- inputs


def pay(payment_id: str, amount: str, currency: str = "CNY") -> PaymentInput:
    return PaymentInput(payment_id=payment_id, amount=Decimal(amount), currency=currency)


async def update_refused(handle: WorkflowHandle[Any, Any], update: Any, arg: Any) -> str:
    """Send an update that must be refused; return the reason the caller sees."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(update, arg)
    cause = info.value.cause
    assert getattr(cause, "type", None) == "Refused", repr(cause)
    return str(getattr(cause, "message", cause))


# ------------------------------------------------------------------------- one started case


@dataclass(frozen=True)
class Stack:
    """The session's servers as one test sees them: Temporal, the worker's queue, PostgreSQL and
    the provider emulator."""

    env: WorkflowEnvironment
    task_queue: str
    pool: asyncpg.Pool
    emulator: ProviderEmulator


@dataclass(frozen=True)
class Case:
    """A started case and what the tests read of it: queries, the borrower's messages (the
    emulator, filtered by the loan's own phone and e-mail) and the rows in PostgreSQL."""

    stack: Stack
    loan: LoanInput
    handle: WorkflowHandle[Any, Any]
    now: datetime    # when the case was opened
    today: date      # the borrower's local date then

    @property
    def env(self) -> WorkflowEnvironment:
        return self.stack.env

    @property
    def pool(self) -> asyncpg.Pool:
        return self.stack.pool

    # time
    async def sleep(self, delta: timedelta) -> None:
        await self.env.sleep(delta)

    async def sleep_until(self, instant: datetime) -> None:
        await self.env.sleep(instant - await self.env.get_current_time())

    # the workflow
    async def pay(self, payment_id: str, amount: str, currency: str = "CNY") -> None:
        await self.handle.signal(CollectionWorkflow.pay, pay(payment_id, amount, currency))

    async def status(self) -> CaseStatus:
        return await self.handle.query(CollectionWorkflow.status)

    async def kinds(self) -> list[str]:
        return [e.kind for e in await self.handle.query(CollectionWorkflow.timeline)]

    async def update(self, update: Any, arg: Any) -> Any:
        return await self.handle.execute_update(update, arg)

    async def refused(self, update: Any, arg: Any) -> str:
        return await update_refused(self.handle, update, arg)

    async def finish(self) -> None:
        """Leave nothing running for the next test's clock.

        Closed through the workflow rather than terminated: terminating a run with an activity in
        flight leaves the time-skipping server's lock held, and the next `sleep` times out.
        """
        desc = await self.handle.describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            # temporalio types the result of a named async update as its coroutine.
            await self.handle.execute_update(  # type: ignore[unused-coroutine]
                CollectionWorkflow.close, CloseInput(actor="test", reason="other"))
            await self.handle.result()

    # the borrower's messages
    def texts(self, channel: str | None = None) -> list[str]:
        """Bodies (and subjects) of what the borrower received, oldest first."""
        return [
            f"{m['subject'] or ''} {m['body'] or ''}".strip()
            for m in self.stack.emulator.messages(channel=channel)
            if m["to"] in (self.loan.phone, self.loan.email)
        ]

    async def wait_messages(self, n: int, channel: str | None = None) -> list[str]:
        async def read() -> list[str]:
            return self.texts(channel)
        return await eventually(read, lambda got: len(got) >= n)

    # PostgreSQL
    async def events(self, kind: str | None = None) -> list[asyncpg.Record]:
        if kind is None:
            return await self.pool.fetch(
                "SELECT * FROM events WHERE loan_id = $1 ORDER BY occurred_at, id",
                self.loan.loan_id)
        return await self.pool.fetch(
            "SELECT * FROM events WHERE loan_id = $1 AND kind = $2 ORDER BY occurred_at, id",
            self.loan.loan_id, kind)

    async def wait_events(self, kind: str, n: int = 1) -> list[asyncpg.Record]:
        """The `kind` events of the loan, once at least `n` of them are written."""
        return await eventually(lambda: self.events(kind), lambda rows: len(rows) >= n)

    async def payments(self) -> list[tuple[str, Decimal, dict[str, str]]]:
        rows = await self.pool.fetch(
            "SELECT payment_id, amount, allocation FROM payments WHERE loan_id = $1 ORDER BY id",
            self.loan.loan_id)
        return [(r["payment_id"], r["amount"], json.loads(r["allocation"])) for r in rows]

    async def sent(self, channels: tuple[str, ...] = ("sms", "email")) -> list[asyncpg.Record]:
        """The messages the case recorded as sent, oldest first."""
        return await self.pool.fetch(
            "SELECT step_id, channel, template, occurred_at FROM contacts"
            " WHERE loan_id = $1 AND decision = 'sent' AND channel = ANY($2::text[])"
            " ORDER BY occurred_at, id", self.loan.loan_id, list(channels))

    async def wait_sent(self, check: Callable[[list[asyncpg.Record]], bool],
                        ) -> list[asyncpg.Record]:
        """The sent messages, once `check` holds of them."""
        return await eventually(self.sent, check)

    async def row(self) -> asyncpg.Record:
        return await self.pool.fetchrow("SELECT * FROM cases WHERE loan_id = $1", self.loan.loan_id)

    async def rows(self, table: str) -> list[asyncpg.Record]:
        """Every row of `table` for this loan, oldest first."""
        return await self.pool.fetch(f"SELECT * FROM {table} WHERE loan_id = $1 ORDER BY id",
                                     self.loan.loan_id)


async def new_loan(stack: Stack, loan_id: str, due_in: int, hour: int = 10,
                   ) -> tuple[LoanInput, datetime, date]:
    """Move the clock to `hour`:00 local and make a loan due `due_in` days from that day
    (negative: already overdue). Returns (loan, now, local today)."""
    now, today = await at_local(stack.env, hour)
    return make_loan(loan_id, due=today + timedelta(days=due_in)), now, today


async def open_case(stack: Stack, loan_id: str, due_in: int, *, hour: int = 10,
                    first_message: bool = False, **settings: Any) -> Case:
    """Start a case at `hour`:00 local for a loan due `due_in` days from then, with the policy's
    `settings` changed if any; with `first_message`, once the borrower has the first message."""
    loan, now, today = await new_loan(stack, loan_id, due_in, hour)
    policy = pinned(loan, **settings) if settings else None
    handle = await start_case(stack.env.client, loan, stack.task_queue, policy=policy)
    case = Case(stack, loan, handle, now, today)
    if first_message:
        await case.wait_messages(1)
    return case
