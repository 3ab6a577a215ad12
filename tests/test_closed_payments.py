"""A payment to a case whose workflow has ended is kept unapplied with the reason, never dropped:
the service answers "unapplied: case closed (<state>)" and the row is in `unapplied_payments`."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.messages import PaymentStatus
from infra.emulator import ProviderEmulator
from service import updates
from service.errors import NotFound
from tests.helpers import Case, Stack, eventually, open_case, pay


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


async def _ended(stack: Stack, loan_id: str) -> Case:
    """A case paid in part, then closed by an operator, its workflow completed and its row
    recorded as closed."""
    case = await open_case(stack, loan_id, due_in=-3)
    client = stack.env.client
    first = await updates.pay(client, stack.pool, loan_id, pay(f"{loan_id}-P1", "100.00"))
    assert first.status == PaymentStatus.APPLIED
    await case.finish()
    await eventually(case.row, lambda row: row is not None and row["state"] == "closed")
    return case


async def test_a_payment_to_an_ended_case_is_kept_unapplied_once(stack: Stack,
                                                                loan_id: str) -> None:
    case = await _ended(stack, loan_id)
    client = stack.env.client
    outstanding = (await case.row())["outstanding"]

    late = await updates.pay(client, stack.pool, loan_id, pay(f"{loan_id}-P2", "250.50"))
    assert late.status == PaymentStatus.UNAPPLIED
    assert late.reason == "case closed (closed)"
    assert late.outstanding == outstanding  # nothing applied: the balance the case ended with
    rows = await case.rows("unapplied_payments")
    assert [(r["payment_id"], r["amount"], r["currency"], r["reason"], r["status"])
            for r in rows] == [(f"{loan_id}-P2", Decimal("250.50"), "CNY",
                                "case closed (closed)", "unapplied")]

    # Reported again (a new request): a duplicate, still one row.
    again = await updates.pay(client, stack.pool, loan_id, pay(f"{loan_id}-P2", "250.50"))
    assert again.status == PaymentStatus.DUPLICATE
    # A payment the case applied before it ended, reported again: a duplicate, not unapplied.
    applied = await updates.pay(client, stack.pool, loan_id, pay(f"{loan_id}-P1", "100.00"))
    assert applied.status == PaymentStatus.DUPLICATE
    assert len(await case.rows("unapplied_payments")) == 1
    # Amounts conserved: reported = applied + unapplied, to the cent.
    paid = sum((amount for _, amount, _ in await case.payments()), Decimal("0"))
    kept = sum((r["amount"] for r in await case.rows("unapplied_payments")), Decimal("0"))
    assert paid + kept == Decimal("350.50")


async def test_a_payment_for_no_case_is_not_found_and_not_kept(stack: Stack,
                                                              loan_id: str) -> None:
    with pytest.raises(NotFound):
        await updates.pay(stack.env.client, stack.pool, loan_id, pay(f"{loan_id}-P1", "10.00"))
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM unapplied_payments WHERE loan_id = $1", loan_id) == 0


async def test_the_pool_is_opened_only_for_a_payment_to_an_ended_case(stack: Stack,
                                                                      loan_id: str) -> None:
    """The CLI passes a function that opens the pool: a payment the case takes opens none."""
    opened: list[str] = []

    async def open_pool() -> asyncpg.Pool:
        opened.append("pool")
        return stack.pool

    case = await open_case(stack, loan_id, due_in=-3)
    taken = await updates.pay(stack.env.client, open_pool, loan_id, pay(f"{loan_id}-P1", "10.00"))
    assert taken.status == PaymentStatus.APPLIED and opened == []
    await case.finish()
    await eventually(case.row, lambda row: row is not None and row["state"] == "closed")
    late = await updates.pay(stack.env.client, open_pool, loan_id, pay(f"{loan_id}-P2", "5.00"))
    assert (late.status, late.reason, opened) == (PaymentStatus.UNAPPLIED,
                                                  "case closed (closed)", ["pool"])
