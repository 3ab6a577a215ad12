"""The contact window checked again right before a send goes out: a send retried (a provider's
500s, a 429's Retry-After) past the end of the window is not made; the case withdraws the
reservation and contacts again at the window's next opening."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.channels.outbox import Outbox
from activities.channels.send_window import outside_window, send_instant
from activities.channels.sms import TwilioSms, twilio_client
from activities.policies import resolve
from activities.templates import LinkBuilder
from activities.wiring import Providers
from contracts.activity_io import OUTSIDE_WINDOW, SendInput, SendWindow
from contracts.policy import RulePack
from infra.emulator import ProviderEmulator
from tests.helpers import eventually, make_loan, start_case
from tests.worker_process import due_for, window_timezone
from workflows.contacts import REOPENED

SHANGHAI = "Asia/Shanghai"
CONTEXT = {"lender": "Demo Lender", "borrower_name": "Li", "loan_ref": "L-LATE", "amount": "1.00",
           "currency": "CNY", "days_overdue": 1, "due_date": "2026-01-01", "days_before_due": 0,
           "opt_out": False, "validation_notice": False}


def _cn_pack() -> RulePack:
    return resolve(make_loan("L-WINDOW", due=datetime.now(UTC).date())).rule_pack


def _window(local_decision: datetime, real_delay: timedelta, *, compressed: bool = False,
            ) -> tuple[SendWindow, datetime]:
    """A send decided at `local_decision` (Shanghai wall time), and the real instant
    `real_delay` later. On a compressed clock the decision's real instant is unrelated to its
    policy instant (an hour after it here)."""
    decided_at = local_decision.replace(tzinfo=ZoneInfo(SHANGHAI)).astimezone(UTC)
    decided_real = decided_at + (timedelta(hours=1) if compressed else timedelta(0))
    return (SendWindow(rule_pack=_cn_pack(), timezone=SHANGHAI, decided_at=decided_at,
                       decided_real=decided_real), decided_real + real_delay)


def test_a_send_past_the_window_end_is_outside_it() -> None:
    late_decision = datetime(2026, 12, 1, 21, 59, 57)
    window, now = _window(late_decision, timedelta(seconds=2))
    assert outside_window(window, now) is None  # 21:59:59 local
    window, now = _window(late_decision, timedelta(seconds=3))
    assert outside_window(window, now) == "cn.cba.quiet_hours_22_08"  # 22:00:00 sharp
    # On a compressed clock the real delay counts as it is, not compressed into hours.
    window, now = _window(late_decision, timedelta(seconds=2), compressed=True)
    assert send_instant(window, now) == window.decided_at + timedelta(seconds=2)
    assert outside_window(window, now) is None
    # A clock behind the decision (skew, a time-skipping server) is no delay at all.
    window, now = _window(datetime(2026, 12, 1, 10, 0), timedelta(seconds=-30))
    assert send_instant(window, now) == window.decided_at
    # Histories from before the check carry no window: not checked.
    assert outside_window(None) is None


async def test_a_send_outside_the_window_is_not_made_and_stays_not_made(
    pool: asyncpg.Pool, providers: Providers, emulator: ProviderEmulator,
) -> None:
    """Straight through the adapter: no provider request, the outbox row ends "failed", and a
    retry of the same send (same key) answers the same without asking the provider."""
    phone = "+86137" + str(uuid.uuid4().int)[:8]
    decided = datetime.now(UTC) - timedelta(minutes=5)
    pack = _cn_pack()
    # A window that closed a minute after the decision, in the borrower's zone.
    closes = (decided + timedelta(minutes=1)).astimezone(ZoneInfo(SHANGHAI)).time()
    window = SendWindow(rule_pack=pack.model_copy(update={"window_start": time(0, 0),
                                                          "window_end": closes}),
                        timezone=SHANGHAI, decided_at=decided, decided_real=decided)
    inp = SendInput(outbox_key=f"late-{uuid.uuid4().hex}", loan_id="L-LATE", channel="sms",
                    to=phone, template="early_reminder", locale="en", context=CONTEXT,
                    window=window)
    sms = TwilioSms(twilio_client(providers.twilio_sid, providers.twilio_token,
                                  providers.twilio_base_url), providers.twilio_from)
    links = LinkBuilder(providers.payment_link_base)
    try:
        first = await sms.send(inp, Outbox(pool), links)
        again = await sms.send(inp, Outbox(pool), links)
    finally:
        await sms.close()
    assert (first.status, first.error_code, first.address_unusable) == (
        OUTSIDE_WINDOW, OUTSIDE_WINDOW, False)
    assert (again.status, again.reused) == (OUTSIDE_WINDOW, True)
    row = await pool.fetchrow("SELECT status, error, provider_id FROM outbox WHERE outbox_key = $1",
                              inp.outbox_key)
    assert (row["status"], row["error"], row["provider_id"]) == ("failed", OUTSIDE_WINDOW, None)
    assert not emulator.messages(channel="sms", to=phone)


@pytest.fixture
async def cleanup() -> AsyncIterator[list[WorkflowHandle]]:
    handles: list[WorkflowHandle] = []
    yield handles
    for h in handles:
        with contextlib.suppress(Exception):
            await h.terminate("test finished")


async def test_a_send_retried_past_the_window_end_is_deferred_to_the_next_opening(
    dev_env: WorkflowEnvironment, dev_worker: Worker, emulator: ProviderEmulator,
    pool: asyncpg.Pool, loan_id: str, cleanup: list[WorkflowHandle],
) -> None:
    """The case reserves its SMS inside the window; the provider answers 500 to every request,
    so the send is retried (2 s, 4 s, 8 s, ...) past the window's end (20 s after the start
    here). That retry sends nothing: the reservation is withdrawn (the caps stop counting it) and
    the message is contacted again under `<step>/reopened`, deferred to 08:00 the next day."""
    tz = window_timezone()
    loan = make_loan(loan_id, due=due_for(tz, 1), timezone=tz)
    policy = resolve(loan)
    closes = (datetime.now(ZoneInfo(tz)) + timedelta(seconds=20)).time()
    policy = policy.model_copy(update={"rule_pack": policy.rule_pack.model_copy(
        update={"window_end": closes})})
    emulator.add_fault(loan.phone, "server_error", channel="sms")
    handle = await start_case(dev_env.client, loan, dev_worker.task_queue, policy)
    cleanup.append(handle)
    key = f"{handle.id}/early-sms/sms"
    reopened = f"{handle.id}/early-sms/{REOPENED}/sms"

    async def contacts() -> dict[str, asyncpg.Record]:
        rows = await pool.fetch("SELECT * FROM contacts WHERE loan_id = $1", loan_id)
        return {r["idempotency_key"]: r for r in rows}

    rows = await eventually(contacts, lambda rs: any(k.startswith(f"{reopened}/deferred")
                                                     for k in rs), timeout=90)
    assert rows[key]["decision"] == "withdrawn"
    assert rows[key]["rule"] == policy.rule_pack.window_rule
    [deferred] = [r for k, r in rows.items() if k.startswith(f"{reopened}/deferred")]
    tomorrow = (datetime.now(ZoneInfo(tz)) + timedelta(days=1)).date()
    assert f"deferred to {tomorrow:%Y-%m-%d} 08:00 local" in deferred["reason"]
    outbox = await pool.fetchrow("SELECT status, error FROM outbox WHERE outbox_key = $1", key)
    assert (outbox["status"], outbox["error"]) == ("failed", OUTSIDE_WINDOW)
    # Nothing reached the borrower, and nothing is counted as a contact made.
    assert not emulator.messages(channel="sms", to=loan.phone)
    assert not [r for r in rows.values() if r["decision"] in ("sent", "breach")]
