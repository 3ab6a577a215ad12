"""The walking skeleton end to end on the time-skipping server, PostgreSQL and the emulator."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.messages import CaseState, PaymentInput
from infra.emulator import ProviderEmulator
from tests.helpers import make_loan, start_case, today_of
from workflows.collection_workflow import CollectionWorkflow


async def test_full_payment_closes_with_receipt(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=5))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await ts_env.sleep(timedelta(days=3))  # past D-3: the pre-due reminder went out
    sms = emulator.messages(channel="sms", to=loan.phone)
    assert len(sms) == 1 and loan.loan_id in sms[0]["body"]
    assert len(emulator.messages(channel="email", to=loan.email)) == 1

    await handle.signal(CollectionWorkflow.pay, PaymentInput(payment_id="p1", amount=Decimal(
            "1200.00"), currency="CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID
    assert result.outstanding == Decimal("0")
    receipts = [m for m in emulator.messages(to=loan.phone) if "paid" in m["body"].lower()]
    assert receipts, [m["body"] for m in emulator.messages(to=loan.phone)]
    rows = await pool.fetch("SELECT * FROM payments WHERE loan_id = $1", loan.loan_id)
    assert [(r["payment_id"], r["amount"]) for r in rows] == [("p1", Decimal("1200.00"))]
    case = await pool.fetchrow("SELECT * FROM cases WHERE loan_id = $1", loan.loan_id)
    assert case["state"] == "paid" and case["outstanding"] == 0
    contacts = await pool.fetch(
            "SELECT channel, decision FROM contacts WHERE loan_id = $1 AND decision = 'sent'",
            loan.loan_id)
    assert {(c["channel"], c["decision"]) for c in contacts} >= {("sms", "sent"), ("email", "sent")}
