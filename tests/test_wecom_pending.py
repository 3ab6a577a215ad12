"""A WeCom message waiting for the staff member's confirmation while the case changes (issue 17):
payments still apply; a cease-contact request or a hold withdraws the task at once (the staff
member can no longer send it) and the step does not fall back to SMS; a confirmation is taken
up at the next check, and an unconfirmed task at its deadline. Through the emulator's WeCom API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.messages import CaseState, CeaseInput, CloseInput, HoldInput, LoanInput
from infra.emulator import ProviderEmulator
from tests.helpers import eventually, pay
from tests.test_wecom import STEP, contacts, open_wecom_case
from workflows.collection_workflow import CollectionWorkflow
from workflows.follow_ups import WITHDRAWN


def tasks(emulator: ProviderEmulator, loan: LoanInput) -> list[dict[str, Any]]:
    return [t for t in emulator.wecom.tasks() if t["external_userid"] == loan.wecom_external_userid]


async def pending_task(env: WorkflowEnvironment, worker: Worker, emulator: ProviderEmulator,
                       loan_id: str) -> tuple[LoanInput, WorkflowHandle[Any, Any]]:
    """A case whose WeCom step has created its task, waiting for the staff member."""
    loan, handle = await open_wecom_case(env, worker, loan_id)
    await env.sleep(timedelta(hours=1, minutes=1))
    await eventually(lambda: asyncio.sleep(0, tasks(emulator, loan)), lambda t: len(t) == 1)
    return loan, handle


async def wecom_row(pool: asyncpg.Pool, loan: LoanInput) -> asyncpg.Record:
    rows = await eventually(lambda: contacts(pool, loan.loan_id), lambda rs: any(
        r["channel"] == "wecom" and r["decision"] != "sent" for r in rs))
    [row] = [r for r in rows if r["channel"] == "wecom"]
    return row


async def test_a_cease_request_withdraws_the_pending_task_and_nothing_falls_back(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    loan, handle = await pending_task(ts_env, ts_worker, emulator, loan_id)
    # temporalio types the result of a named async update as its coroutine (tests/helpers.py).
    await handle.execute_update(  # type: ignore[unused-coroutine]
        CollectionWorkflow.cease, CeaseInput(actor="agent-1"))
    row = await wecom_row(pool, loan)
    [task] = tasks(emulator, loan)
    assert task["cancelled"], task  # withdrawn at once: the staff member cannot send it now
    assert emulator.wecom.confirm(msgid=task["msgid"]) == 0
    assert (row["decision"], row["rule"]) == ("failed", "cn.cease_communication")
    assert row["reason"].startswith(f"{WITHDRAWN}: ")
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.WRITTEN_OFF
    assert emulator.messages(channel="sms", to=loan.phone) == []


async def test_a_hold_withdraws_the_pending_task_and_the_step_does_not_fall_back_meanwhile(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    loan, handle = await pending_task(ts_env, ts_worker, emulator, loan_id)
    # A payment while the task waits applies at once.
    await handle.signal(CollectionWorkflow.pay, pay("part-1", "100.00"))
    await eventually(lambda: handle.query(CollectionWorkflow.status),
                     lambda st: st.paid_total > 0)
    await handle.execute_update(  # type: ignore[unused-coroutine]
        CollectionWorkflow.hold, HoldInput(actor="agent-1", kind="dispute", reason="disputed"))
    await ts_env.sleep(timedelta(hours=5))  # past the step's confirmation deadline
    row = await wecom_row(pool, loan)
    assert (row["decision"], row["rule"]) == ("failed", "case.hold.dispute")
    assert [t["cancelled"] for t in tasks(emulator, loan)] == [True]
    # No fallback during the hold: the one SMS is the payment's receipt, which a hold lets through.
    [receipt] = [m["body"] for m in emulator.messages(channel="sms", to=loan.phone)]
    assert "received 100.00 CNY" in receipt
    await handle.execute_update(  # type: ignore[unused-coroutine]
        CollectionWorkflow.close, CloseInput(actor="test", reason="other"))
    await asyncio.wait_for(handle.result(), timeout=60)
    assert [(r["step_id"], r["channel"]) for r in await contacts(pool, loan.loan_id)
            if r["step_id"] == STEP] == [(STEP, "wecom")]
