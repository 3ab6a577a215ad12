"""Test helpers: loans, pinned policies, starting cases, waiting for eventually consistent reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle

from activities.policies import resolve
from contracts.case_io import CollectionInput
from workflows.collection_workflow import CollectionWorkflow
from contracts.messages import LoanInput
from contracts.policy import ResolvedPolicy
from contracts.names import workflow_id_for

T = TypeVar("T")


def make_loan(loan_id: str, due: date, **overrides: Any) -> LoanInput:
    fields: dict[str, Any] = {
        "loan_id": loan_id,
        "borrower_name": "Li Lei",
        "phone": "+86138" + "".join(random.choices("0123456789", k=8)),
        "email": f"{loan_id.lower()}@example.com",
        "locale": "en",
        "timezone": "Asia/Shanghai",
        "currency": "CNY",
        "amount_overdue": Decimal("1200.00"),
        "interest": Decimal("150.00"),
        "fees": Decimal("50.00"),
        "due_date": due,
    }
    fields.update(overrides)
    return LoanInput(**fields)


def pinned(loan: LoanInput, **settings: Any) -> ResolvedPolicy:
    """The policy the loan would get, with settings changed for a test."""
    policy = resolve(loan)
    if settings:
        policy = policy.model_copy(update={"settings": policy.settings.model_copy(update=settings)})
    return policy


async def start_case(client: Client, loan: LoanInput, task_queue: str,
                     policy: ResolvedPolicy | None = None) -> WorkflowHandle:
    return await client.start_workflow(
        CollectionWorkflow.run,
        CollectionInput(loan=loan, policy=policy),
        id=workflow_id_for(loan.loan_id),
        task_queue=task_queue,
    )


async def eventually(fn: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     timeout: float = 15.0, interval: float = 0.1) -> T:
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
    return (now + timedelta(hours=8)).date()  # Asia/Shanghai, the default test borrower's zone
