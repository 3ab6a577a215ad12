"""One batch of durable writes per wake-up (workflows/carried_writes.py): a case's writes and its
reservations travel with its sends and tasks, and still all land in PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.activity_io import RECORD, RESERVE_CONTACT
from infra.emulator import ProviderEmulator
from service import history as case_history
from tests.helpers import make_loan, start_case, today_of


async def _wake_ups(env: WorkflowEnvironment, workflow_id: str) -> list[list[str]]:
    """The activities each timer's firing led to, in order (the first list: before any timer)."""
    wakes: list[list[str]] = [[]]
    async for ev in env.client.get_workflow_handle(workflow_id).fetch_history_events():
        if ev.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            wakes.append([])
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            wakes[-1].append(ev.activity_task_scheduled_event_attributes.activity_type.name)
    return wakes


async def test_a_reminder_step_is_its_sends_and_nothing_else(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=5))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await ts_env.sleep(timedelta(days=3))  # past D-3: the pre-due reminder, by SMS and e-mail
    assert len(emulator.messages(channel="sms", to=loan.phone)) == 1
    assert len(emulator.messages(channel="email", to=loan.email)) == 1

    wakes = await _wake_ups(ts_env, handle.id)
    # The reminder's wake-up: its two sends, which carried the step's records and the two
    # reservations, and wrote what they sent; no `reserve_contact`, no `record` of its own.
    assert ["send_sms", "send_email"] in wakes, wakes
    assert not any(RESERVE_CONTACT in w for w in wakes), wakes
    assert [w for w in wakes if RECORD in w] == [[RECORD]], wakes  # the opening only

    # Everything is in PostgreSQL all the same: the reservations became the contacts sent, the
    # step's and the sends' events are there, and the snapshot.
    contacts = await pool.fetch(
        "SELECT channel, decision, outcome, rule FROM contacts WHERE loan_id = $1 ORDER BY id",
        loan_id)
    assert [(c["channel"], c["decision"], c["outcome"]) for c in contacts] == [
        ("sms", "sent", "sent"), ("email", "sent", "sent")]
    assert all(c["rule"] == "cn.window_and_caps" for c in contacts), contacts
    kinds = [r["kind"] for r in await pool.fetch(
        "SELECT kind FROM events WHERE loan_id = $1 ORDER BY occurred_at, id", loan_id)]
    assert kinds[:1] == ["case_opened"] and kinds.count("contact_sent") == 2
    assert "step_started" in kinds
    case = await pool.fetchrow("SELECT stage, state FROM cases WHERE loan_id = $1", loan_id)
    assert (case["stage"], case["state"]) == ("pre_due", "active")

    # Read back from the event history alone (no worker's answer), the events carried by the
    # sends are there too: the same set PostgreSQL holds.
    exists, from_history = await case_history._temporal_history(
        ts_env.client, loan_id, use_query=False, query_timeout=1)
    assert exists
    pg_events = await pool.fetch(
        "SELECT kind, summary, occurred_at FROM events WHERE loan_id = $1", loan_id)
    assert {(e.kind, e.summary, e.at) for e in from_history} == {
        (r["kind"], r["summary"], r["occurred_at"]) for r in pg_events}
