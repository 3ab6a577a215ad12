"""WeCom external-contact messages (issue 17), through the real HTTP path to the emulator: a step
sent after the staff member confirms; unconfirmed by the deadline, reminded once, cancelled and
fallen back to SMS; a borrower who is not an external contact falling back with the reason; an
expired token refreshed once; no duplicate task when an attempt dies after WeCom took it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.channels.outbox import Outbox
from activities.channels.wecom import WeComMessages
from activities.channels.wecom_client import WeComClient
from activities.templates import LinkBuilder
from activities.wiring import Providers
from contracts.activity_io import SendInput
from contracts.messages import CaseState, LoanInput, Stage
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from infra.emulator.wecom import CORP_ID, CORP_SECRET
from tests.helpers import at_local, eventually, make_loan, pinned, start_case
from workflows.collection_workflow import CollectionWorkflow
from workflows.contacts import UNCONFIRMED_RULE, UNUSABLE_ADDRESS_RULE

STEP = "wecom-reminder"


def wecom_steps(deadline_days: int | None = None) -> list[Step]:
    return [
        Step(id=STEP, day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["wecom"],
             template="early_reminder", deadline_days=deadline_days),
        Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
             template="write_off_notice", notice="collection_ending"),
    ]


async def open_wecom_case(env: WorkflowEnvironment, worker: Worker, loan_id: str,
                          **loan: Any) -> tuple[LoanInput, WorkflowHandle[Any, Any]]:
    """A case whose WeCom step comes due an hour from now (10:00 local)."""
    _, today = await at_local(env, 9)
    fields: dict[str, Any] = {"wecom_external_userid": f"wm{uuid.uuid4().hex}"}
    fields.update(loan)
    made = make_loan(loan_id, due=today - timedelta(days=1), **fields)
    policy = pinned(made).model_copy(update={"steps": wecom_steps()})
    return made, await start_case(env.client, made, worker.task_queue, policy)


async def contacts(pool: asyncpg.Pool, loan_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch(
        "SELECT * FROM contacts WHERE loan_id = $1 ORDER BY occurred_at, idempotency_key",
        loan_id))


async def control(emulator: ProviderEmulator, path: str, body: dict[str, Any]) -> None:
    """The emulator's control API, over HTTP, as a test in another process would drive it."""
    async with aiohttp.ClientSession() as http, http.post(emulator.url + path, json=body) as r:
        assert r.status < 300, await r.text()


async def test_a_step_is_sent_over_wecom_once_the_staff_member_confirms(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    loan, handle = await open_wecom_case(ts_env, ts_worker, loan_id)
    await ts_env.sleep(timedelta(hours=1, minutes=1))
    [task] = await eventually(
        lambda: _tasks(emulator, loan.wecom_external_userid), lambda t: len(t) == 1)
    assert task["sender"] == "staff-lee" and loan.loan_id in task["text"]
    await control(emulator, "/_emulator/wecom/confirm", {"msgid": task["msgid"]})
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.WRITTEN_OFF
    rows = {r["channel"]: r for r in await contacts(pool, loan.loan_id)}
    assert (rows["wecom"]["decision"], rows["wecom"]["outcome"]) == ("sent", "sent")
    assert rows["wecom"]["contact_key"].startswith("w:")
    assert "sms" not in rows  # nothing fell back
    [done] = await _tasks(emulator, loan.wecom_external_userid)
    assert (done["status"], done["reminders"], done["cancelled"]) == (1, 0, False)
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert "contact_pending" in kinds and "contact_reminded" not in kinds


async def test_an_unconfirmed_message_is_reminded_once_then_falls_back_to_sms_at_its_deadline(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    loan, handle = await open_wecom_case(ts_env, ts_worker, loan_id)
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.WRITTEN_OFF
    [task] = await _tasks(emulator, loan.wecom_external_userid)
    assert (task["status"], task["reminders"], task["cancelled"]) == (0, 1, True)
    rows = {r["channel"]: r for r in await contacts(pool, loan.loan_id)}
    wecom, sms = rows["wecom"], rows["sms"]
    assert (wecom["decision"], wecom["rule"]) == ("failed", UNCONFIRMED_RULE)
    assert "not confirmed" in wecom["reason"]
    assert (sms["decision"], sms["step_id"]) == ("sent", STEP)
    assert sms["idempotency_key"].endswith(f"/{STEP}-fallback/sms")
    # At the deadline (the policy's wecom_confirm_hours after the task), not before.
    waited = sms["occurred_at"] - wecom["occurred_at"]
    assert timedelta(hours=4) <= waited < timedelta(hours=4, minutes=5), waited
    [text] = [m["body"] for m in emulator.messages(channel="sms", to=loan.phone)]
    assert loan.loan_id in text


async def test_a_borrower_who_is_not_an_external_contact_falls_back_with_the_reason(
    ts_env: WorkflowEnvironment, ts_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str,
) -> None:
    # No WeCom id on the loan: the channel is unusable from the start.
    loan, handle = await open_wecom_case(ts_env, ts_worker, loan_id, wecom_external_userid="")
    await asyncio.wait_for(handle.result(), timeout=60)
    rows = {r["channel"]: r for r in await contacts(pool, loan.loan_id)}
    assert (rows["wecom"]["decision"], rows["wecom"]["rule"]) == ("skipped", UNUSABLE_ADDRESS_RULE)
    assert "not a WeCom external contact" in rows["wecom"]["reason"]
    assert rows["sms"]["decision"] == "sent"

    # WeCom says so: the staff member's contact was deleted.
    other = f"{loan_id}b"
    userid = f"wm{uuid.uuid4().hex}"
    await control(emulator, "/_emulator/wecom/remove_contact", {"external_userid": userid})
    loan, handle = await open_wecom_case(ts_env, ts_worker, other, wecom_external_userid=userid)
    await asyncio.wait_for(handle.result(), timeout=60)
    rows = {r["channel"]: r for r in await contacts(pool, loan.loan_id)}
    assert (rows["wecom"]["decision"], rows["wecom"]["reason"]) == (
        "failed", "provider refused: wecom_84061")
    assert rows["sms"]["decision"] == "sent"
    assert await _tasks(emulator, userid) == []


async def test_an_expired_token_is_refreshed_once_and_never_fetched_per_message(
    emulator: ProviderEmulator, pool: asyncpg.Pool, providers: Providers,
) -> None:
    client = WeComClient(CORP_ID, CORP_SECRET, emulator.url, timeout_seconds=5)
    adapter = WeComMessages(client)
    outbox, links = Outbox(pool), LinkBuilder(providers.payment_link_base)
    try:
        first = await adapter.send(_send_input(), outbox, links)
        assert first.status == "sent" and client.token_fetches == 1
        await control(emulator, "/_emulator/wecom/expire_tokens", {})
        second = await adapter.send(_send_input(), outbox, links)
        assert second.status == "sent" and not second.reused
        assert client.token_fetches == 2  # refused with 42001 once, fetched once, sent
        third = await adapter.send(_send_input(), outbox, links)
        assert third.status == "sent" and client.token_fetches == 2
        assert emulator.stats()["wecom"]["expired_token"] >= 1
    finally:
        await adapter.close()


async def test_the_frequency_limit_is_retried_later(
    emulator: ProviderEmulator, pool: asyncpg.Pool, providers: Providers,
) -> None:
    from temporalio.exceptions import ApplicationError

    client = WeComClient(CORP_ID, CORP_SECRET, emulator.url, timeout_seconds=5)
    adapter = WeComMessages(client)
    inp = _send_input()
    emulator.add_fault(inp.to, "rate_limit", channel="wecom", times=1)
    outbox, links = Outbox(pool), LinkBuilder(providers.payment_link_base)
    try:
        with pytest.raises(ApplicationError) as raised:
            await adapter.send(inp, outbox, links)
        assert raised.value.type == "ProviderUnavailable"
        assert raised.value.next_retry_delay == timedelta(seconds=60)
        again = await adapter.send(inp, outbox, links)  # Temporal's retry, a minute later
        assert again.status == "sent"
        assert len(await _tasks(emulator, inp.to)) == 1
    finally:
        await adapter.close()


async def test_no_duplicate_task_when_the_attempt_dies_after_wecom_took_it(
    emulator: ProviderEmulator, pool: asyncpg.Pool, providers: Providers,
) -> None:
    """WeCom creates the task, but its answer comes after the attempt gave up (as when the worker
    is killed mid-send): the retry finds the task in WeCom's list and creates none."""
    client = WeComClient(CORP_ID, CORP_SECRET, emulator.url, timeout_seconds=0.5)
    adapter = WeComMessages(client)
    inp = _send_input()
    emulator.add_fault(inp.to, "slow", channel="wecom", times=1, delay=2)
    outbox, links = Outbox(pool, in_flight_for=timedelta(seconds=0)), LinkBuilder(
        providers.payment_link_base)
    try:
        with pytest.raises(TimeoutError):
            await adapter.send(inp, outbox, links)
        retried = await adapter.send(inp, outbox, links)
        [task] = await _tasks(emulator, inp.to)
        assert (retried.status, retried.reused, retried.provider_id) == (
            "sent", True, task["msgid"])
    finally:
        await adapter.close()


def _send_input() -> SendInput:
    return SendInput(outbox_key=f"wecom-test-{uuid.uuid4().hex}", loan_id="L-WECOM",
                     channel="wecom", to=f"wm{uuid.uuid4().hex}", template="early_reminder",
                     locale="zh-CN", context={
                         "lender": "Demo Lender", "borrower_name": "Li Lei", "loan_ref": "L-WECOM",
                         "amount": "1,200.00", "currency": "CNY", "days_overdue": 3,
                         "due_date": "2026-11-20", "days_before_due": 0, "opt_out": False,
                         "validation_notice": False})


async def _tasks(emulator: ProviderEmulator, external_userid: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            emulator.url + "/_emulator/wecom/tasks") as r:
        found: list[dict[str, Any]] = (await r.json())["tasks"]
    return [t for t in found if t["external_userid"] == external_userid]
