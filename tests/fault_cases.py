"""Cases for the process-fault tests (`test_process_faults.py`, `test_stack.py`): a short ladder on
a compressed clock, and the invariants a case must hold after workers, servers or the database
failed under it.

The ladder (SMS, SMS + e-mail, a call, SMS + e-mail, write-off with an e-mail notice) runs in
about 15 s of real time with `day_seconds=2`. Where a fault keeps a case from running for a while,
steps that came due meanwhile may be superseded by a later one: the checks are invariants, not a
fixed count:

- every case ends written off, and every ladder step was either run or recorded as skipped;
- one provider message per outbox key marked sent, and one outbox key per provider message
  (no duplicate, nothing claimed as sent that the provider does not have);
- the events table holds exactly the case's timeline, and the case row shows the final state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from contracts.messages import CaseState, LoanInput, Stage
from contracts.policy import ResolvedPolicy, Step
from infra.emulator import EmulatorClient, ProviderEmulator
from tests.helpers import eventually, make_loan, pinned
from tests.worker_process import WorkerProcess
from workflows.collection_workflow import CollectionWorkflow

LADDER = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="early-reminder", day=2, hour=10, stage=Stage.EARLY, kind="message",
         channels=["sms", "email"], template="early_reminder"),
    Step(id="early-call", day=3, hour=11, stage=Stage.EARLY, kind="call"),
    Step(id="firm-reminder", day=4, hour=10, stage=Stage.MIDDLE, kind="message",
         channels=["sms", "email"], template="firm_reminder", tone="firm"),
    Step(id="write-off", day=6, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", tone="formal", notice="collection_ending"),
]

# What the provider received, by channel and recipient: in-process or over the control API.
Messages = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


def compressed(loan: LoanInput, day_seconds: int = 2) -> ResolvedPolicy:
    # A send attempt lost with a killed worker is retried after its start-to-close timeout: keep it
    # short here (60 s by default). The database activities' 30 s is the workflow's own.
    policy = pinned(loan, day_seconds=day_seconds, send_timeout_seconds=5)
    return policy.model_copy(update={"steps": LADDER, "ladder_name": "fault-test"})


def new_loans(n: int, today: date) -> list[LoanInput]:
    return [make_loan(f"P{uuid.uuid4().hex[:10]}", due=today) for _ in range(n)]


def in_process(emu: ProviderEmulator) -> Messages:
    async def messages(channel: str, to: str) -> list[dict[str, Any]]:
        return emu.messages(channel=channel, to=to)
    return messages


def over_http(ctl: EmulatorClient) -> Messages:
    async def messages(channel: str, to: str) -> list[dict[str, Any]]:
        return await ctl.messages(channel=channel, to=to)
    return messages


async def messages_sent(messages: Messages, loans: list[LoanInput]) -> int:
    return sum([len(await messages("sms", loan.phone)) + len(await messages("email", loan.email))
                for loan in loans])


async def wait_for_messages(messages: Messages, loans: list[LoanInput], at_least: int,
                            within: float = 60) -> None:
    await eventually(lambda: messages_sent(messages, loans), lambda n: n >= at_least,
                     timeout=within)


async def results(handles: list[WorkflowHandle[Any, Any]], within: float = 120) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), within)


async def check_case(handle: WorkflowHandle[Any, Any], loan: LoanInput, pool: asyncpg.Pool,
                     messages: Messages) -> dict[str, int]:
    """The invariants of a case that went through faults; returns its message counts."""
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result

    timeline = await handle.query(CollectionWorkflow.timeline)
    accounted = {t.detail.get("step") for t in timeline
                 if t.kind in ("step_started", "step_skipped")}
    assert accounted >= {s.id for s in LADDER}, [(t.kind, t.summary) for t in timeline]

    # Provider messages <-> outbox rows marked sent, one to one.
    rows = await pool.fetch("SELECT outbox_key, channel, provider_id FROM outbox "
                            "WHERE outbox_key LIKE $1 AND status = 'sent'", handle.id + "/%")
    sms = [m["id"] for m in await messages("sms", loan.phone)]
    assert Counter(sms) == Counter(r["provider_id"] for r in rows if r["channel"] == "sms"), (
        sms, rows)
    mail_keys = [m["custom_args"]["outbox_key"] for m in await messages("email", loan.email)]
    mail_rows = [r["outbox_key"] for r in rows if r["channel"] == "email"]
    assert Counter(mail_keys) == Counter(mail_rows), (mail_keys, rows)
    stuck = await pool.fetch("SELECT outbox_key, status FROM outbox WHERE outbox_key LIKE $1 "
                             "AND status NOT IN ('sent', 'failed')", handle.id + "/%")
    assert not stuck, stuck
    started = [t.detail["step"] for t in timeline if t.kind == "step_started"]
    message_steps = {s.id: s for s in LADDER if s.kind in ("message", "write_off")}
    expected = sum(len(message_steps[s].channels or ["email"])
                   for s in started if s in message_steps)
    assert len(rows) == expected, (started, rows)

    # The database has the whole timeline, once.
    events = await eventually(
        lambda: pool.fetch("SELECT kind FROM events WHERE loan_id = $1", loan.loan_id),
        lambda es: len(es) >= len(timeline))
    assert Counter(e["kind"] for e in events) == Counter(t.kind for t in timeline)
    case = await pool.fetchrow("SELECT state, stage FROM cases WHERE loan_id = $1", loan.loan_id)
    assert case["state"] == "written_off" and case["stage"] == "written_off"
    contacts = await pool.fetch(
        "SELECT idempotency_key, outcome FROM contacts WHERE loan_id = $1 "
        "AND decision = 'sent' AND channel IN ('sms', 'email')", loan.loan_id)
    assert {c["idempotency_key"] for c in contacts} == {r["outbox_key"] for r in rows}
    assert all(c["outcome"] == "sent" for c in contacts), contacts
    return {"sms": len(sms), "email": len(mail_keys)}


async def identities(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Worker identities that completed this workflow's tasks, in order."""
    found = []
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            found.append(e.workflow_task_completed_event_attributes.identity)
    return found


async def kill_and_check_takeover(doomed: WorkerProcess, handles: list[WorkflowHandle[Any, Any]],
                                  loans: list[LoanInput], pool: asyncpg.Pool, messages: Messages,
                                  within: float = 120) -> None:
    """SIGKILL `doomed` while (some of) the cases run on it; every case still ends as it must,
    and each one that was running at the kill was finished by another worker."""
    assert doomed.proc is not None
    doomed_id = f"{doomed.proc.pid}@"
    await doomed.kill()
    running = [(await h.describe()).status == WorkflowExecutionStatus.RUNNING for h in handles]
    assert any(running), "every case finished before the kill: nothing was tested"
    await results(handles, within=within)
    for handle, loan, was_running in zip(handles, loans, running, strict=True):
        await check_case(handle, loan, pool, messages)
        ids = await identities(handle)
        assert ids[0].startswith(doomed_id), ids  # the killed worker had the case...
        if was_running:
            assert not ids[-1].startswith(doomed_id), ids  # ...the survivor finished it


# ----------------------------------------------------------- WeCom and voice (issue 17)

# One step on each new channel, then the write-off: what a kill mid-send must not send twice.
NEW_CHANNEL_STEP = "new-channel"


def new_channel_policy(loan: LoanInput, name: str, day_seconds: int = 2) -> ResolvedPolicy:
    policy = compressed(loan, day_seconds)
    return policy.model_copy(update={"steps": [
        Step(id=NEW_CHANNEL_STEP, day=1, hour=10, stage=Stage.EARLY, kind="message",
             channels=[name], template="early_reminder"),
        LADDER[-1],
    ]})


def new_channel_loans(today: date) -> dict[str, LoanInput]:
    """A WeCom borrower (an external contact) and a voice one, each on a number of their own."""
    return {"wecom": make_loan(f"P{uuid.uuid4().hex[:10]}", due=today,
                               wecom_external_userid=f"wm{uuid.uuid4().hex}"),
            "voice": make_loan(f"P{uuid.uuid4().hex[:10]}", due=today)}


def provider_records(emu: ProviderEmulator, name: str, loan: LoanInput) -> list[dict[str, Any]]:
    """What the provider holds for the loan's step: WeCom tasks, or placed calls."""
    if name == "wecom":
        return [t for t in emu.wecom.tasks() if t["external_userid"] == loan.wecom_external_userid]
    return [c for c in emu.calls.calls() if c["to"] == loan.phone]


async def new_channel_outbox(pool: asyncpg.Pool, handle: WorkflowHandle[Any, Any],
                             name: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT status, provider_id FROM outbox WHERE outbox_key = $1",
                               f"{handle.id}/{NEW_CHANNEL_STEP}/{name}")


async def send_attempts(handle: WorkflowHandle[Any, Any], activity_type: str) -> int:
    """The attempt the `activity_type` activity completed on (history records the last one)."""
    scheduled: set[int] = set()
    attempt = 0
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and (
                e.activity_task_scheduled_event_attributes.activity_type.name == activity_type):
            scheduled.add(e.event_id)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and (
                e.activity_task_started_event_attributes.scheduled_event_id in scheduled):
            attempt = max(attempt, e.activity_task_started_event_attributes.attempt)
    return attempt
