"""The ladder end to end on the time-skipping server, PostgreSQL and the provider emulator.

Every test reads the server's clock first and places its due date relative to it: the clock carries
over from one test to the next. `ts_env.sleep` moves time to a chosen point (to answer a task or ask
for cease-contact there), `handle.result()` skips to the end of the case.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.contact_keys import OPT_OUT_RULE, phone_key
from contracts.messages import (
    CaseState,
    CeaseInput,
    DeliveryReport,
    LoanInput,
    Stage,
    TaskOutcome,
    TaskOutcomeInput,
    UpdateResult,
)
from contracts.names import Update, workflow_id_for
from contracts.policy import ResolvedPolicy, Step
from infra.emulator import ProviderEmulator
from policies import compliance
from service.provider_events import lift, suppress
from tests.helpers import eventually, make_loan, pinned, start_case, today_of
from workflows.collection_workflow import CollectionWorkflow

POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
STAGES = ["pre_due", "early", "middle", "late", "legal", "written_off"]
CALLS = ["early-call", "middle-call-1", "middle-call-2", "middle-call-3", "middle-call-4"]


# ------------------------------------------------------------------------------------ helpers


def _at(loan: LoanInput, day: int, hour: int, minute: int = 0) -> datetime:
    """The UTC instant of local `due + day` at hour:minute in the borrower's zone."""
    instant = compliance.step_instant(loan.due_date, day, hour, loan.timezone)
    return instant + timedelta(minutes=minute)


async def _sleep_until(env: WorkflowEnvironment, target: datetime) -> None:
    now = await env.get_current_time()
    if target > now:
        await env.sleep(target - now)


def _messages(emulator: ProviderEmulator, loan: LoanInput) -> list[dict[str, Any]]:
    """This borrower's SMS and e-mails, in the order the provider received them."""
    return [m for m in emulator.messages() if m["to"] in (loan.phone, loan.email)]


def _text(m: dict[str, Any]) -> str:
    return f"{m['subject'] or ''}\n{m['body'] or ''}"


def _kind(m: dict[str, Any]) -> tuple[str, str]:
    """(channel, template) of a message, recognised by its content."""
    text = _text(m)
    marks = [
        ("Important information about your debt", "validation_notice"),
        ("friendly reminder", "pre_due_reminder"),
        ("placed with", "agency_placement_notice"),
        ("FORMAL NOTICE OF OVERDUE PAYMENT", "formal_notice"),
        ("NOTICE OF LEGAL ACTION", "litigation_notice"),
        ("Legal letter on behalf of", "lawyer_letter"),
        ("seriously overdue", "late_notice"),
        ("Serious arrears", "late_notice"),
        ("is ending", "write_off_notice"),
        ("Action needed", "firm_reminder"),
        ("Please pay now", "firm_reminder"),
        ("overdue", "early_reminder"),
    ]
    for mark, template in marks:
        if mark.lower() in text.lower():
            return m["channel"], template
    return m["channel"], "?"


async def _rows(pool: asyncpg.Pool, table: str, loan_id: str,
                order: str = "id") -> list[asyncpg.Record]:
    return await pool.fetch(f"SELECT * FROM {table} WHERE loan_id = $1 ORDER BY {order}", loan_id)


async def _task_row(pool: asyncpg.Pool, loan_id: str, step_id: str,
                    within: float = 15) -> asyncpg.Record:
    return await eventually(
        lambda: pool.fetchrow("SELECT * FROM tasks WHERE loan_id = $1 AND step_id = $2",
                              loan_id, step_id),
        lambda r: r is not None, timeout=within,
    )


async def _result(handle: WorkflowHandle) -> Any:
    return await asyncio.wait_for(handle.result(), timeout=60)


async def _assert_written_off(pool: asyncpg.Pool, handle: WorkflowHandle, loan: LoanInput,
                              stages: list[str] = STAGES) -> None:
    result = await _result(handle)
    assert result.state == CaseState.WRITTEN_OFF and result.stage == Stage.WRITTEN_OFF
    case = await pool.fetchrow("SELECT * FROM cases WHERE loan_id = $1", loan.loan_id)
    assert (case["state"], case["stage"]) == ("written_off", "written_off")
    assert case["closed_at"] is not None
    history = await _rows(pool, "stage_history", loan.loan_id)
    assert [(h["from_stage"], h["to_stage"]) for h in history] == list(
        zip([None, *stages], stages, strict=False))


def _policy(loan: LoanInput, steps: list[Step], **settings: Any) -> ResolvedPolicy:
    return pinned(loan, **settings).model_copy(update={"steps": steps})


def _write_off(day: int) -> Step:
    return Step(id="write-off", day=day, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                template="write_off_notice", notice="collection_ending")


# ------------------------------------------------------------------ the whole default ladder


async def test_large_balance_walks_every_step_to_write_off(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=5), amount_overdue=Decimal("8000.00"))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await _assert_written_off(pool, handle, loan)

    msgs = _messages(emulator, loan)
    assert [_kind(m) for m in msgs] == [
        ("sms", "pre_due_reminder"), ("email", "pre_due_reminder"),
        ("sms", "early_reminder"),
        ("sms", "early_reminder"), ("email", "early_reminder"),
        ("sms", "firm_reminder"), ("email", "firm_reminder"),
        ("email", "formal_notice"),
        ("sms", "late_notice"), ("email", "late_notice"),
        ("email", "lawyer_letter"),
        ("email", "litigation_notice"),
        ("email", "write_off_notice"),
    ], [_text(m)[:80] for m in msgs]
    due = loan.due_date.isoformat()
    for m in msgs:
        assert loan.loan_id in _text(m) and "8,000.00 CNY" in _text(m), _text(m)
    assert f"due on {due}, in 3 days" in msgs[0]["body"]
    assert "now 1 day overdue" in msgs[2]["body"] and "now 3 days overdue" in msgs[3]["body"]
    assert "7 days overdue" in msgs[5]["body"]
    formal = msgs[7]["body"]
    assert "Amount outstanding: 8,000.00 CNY" in formal and "Days overdue: 14" in formal
    assert f"Payment due date: {due}" in formal
    assert "(30 days)" in msgs[8]["body"] and "30 days overdue" in msgs[9]["body"]
    assert "60 days overdue" in msgs[10]["body"] and "court" in msgs[10]["body"]
    assert "Days overdue: 90" in msgs[11]["body"]
    assert "180 days overdue" in msgs[12]["body"]

    # Every contact went out at its step's local hour (10:00 Shanghai for the messages).
    sent = [c for c in await _rows(pool, "contacts", loan.loan_id, "occurred_at, id")
            if c["channel"] in ("sms", "email")]
    assert all(c["decision"] == "sent" and c["outcome"] == "sent" for c in sent)
    assert [c["local_date"] - loan.due_date for c in sent] == [
        timedelta(days=d) for d in (-3, -3, 1, 3, 3, 7, 7, 14, 30, 30, 60, 90, 180)]
    assert {compliance.local(c["occurred_at"], loan.timezone).hour for c in sent} == {10}

    tasks = await _rows(pool, "tasks", loan.loan_id)
    assert [(t["kind"], t["step_id"], t["status"], t["outcome"]) for t in tasks] == [
        *[("call", s, "expired", "deadline_missed") for s in CALLS],
        ("visit", "field-visit", "expired", "deadline_missed"),
        ("call", "late-call", "expired", "deadline_missed"),
    ]
    visit = tasks[5]
    assert visit["created_at"] - _at(loan, 35, 10) < timedelta(seconds=5)
    assert visit["due_by"] - visit["created_at"] == timedelta(days=7)
    legal = await _rows(pool, "legal_actions", loan.loan_id)
    assert [a["action"] for a in legal] == ["lawyer_letter", "filing"]
    assert [a["documents"] for a in legal] and all('"8000.00"' in a["documents"] for a in legal)

    timeline = await handle.query(CollectionWorkflow.timeline)
    skipped = [e.detail["step"] for e in timeline if e.kind == "step_skipped"]
    assert skipped == ["agency-placement"]


async def test_small_balance_goes_to_an_agency_without_filing(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=4), amount_overdue=Decimal("800.00"),
                     interest=Decimal("40.00"), fees=Decimal("10.00"))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await _assert_written_off(pool, handle, loan)

    msgs = _messages(emulator, loan)
    assert [_kind(m) for m in msgs] == [
        ("sms", "pre_due_reminder"), ("email", "pre_due_reminder"),
        ("sms", "early_reminder"),
        ("sms", "early_reminder"), ("email", "early_reminder"),
        ("sms", "firm_reminder"), ("email", "firm_reminder"),
        ("email", "formal_notice"),
        ("sms", "late_notice"), ("email", "late_notice"),
        ("email", "agency_placement_notice"),
        ("email", "lawyer_letter"),
        ("email", "write_off_notice"),
    ], [_text(m)[:80] for m in msgs]
    assert all("800.00 CNY" in _text(m) for m in msgs)
    assert "Days overdue: 14" in msgs[7]["body"]
    assert "35 days overdue" in msgs[10]["body"] and "collection agency" in msgs[10]["body"]
    tasks = await _rows(pool, "tasks", loan.loan_id)
    assert [(t["kind"], t["step_id"], t["status"], t["outcome"]) for t in tasks] == [
        *[("call", s, "expired", "deadline_missed") for s in CALLS],
    ]  # late-call (D+45) came due while placed with an agency (D+35 to D+125): superseded
    legal = await _rows(pool, "legal_actions", loan.loan_id)
    assert [a["action"] for a in legal] == ["agency_placement", "lawyer_letter"]
    assert legal[0]["created_at"] - _at(loan, 35, 10) < timedelta(seconds=5)
    timeline = await handle.query(CollectionWorkflow.timeline)
    skipped = [e.detail["step"] for e in timeline if e.kind == "step_skipped"]
    assert skipped == ["field-visit", "filing", "late-call"]


# ------------------------------------------------------------------------------ field visits


async def test_visit_deadline_passes_and_the_ladder_continues(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2), amount_overdue=Decimal("9000.00"))
    policy = _policy(loan, [
        Step(id="field-visit", day=1, hour=10, stage=Stage.LATE, kind="visit", deadline_days=3),
        Step(id="late-notice", day=6, hour=10, stage=Stage.LATE, kind="message", channels=["email"],
             template="late_notice"),
        _write_off(8),
    ])
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue, policy)
    await _result(handle)

    [task] = await _rows(pool, "tasks", loan.loan_id)
    assert (task["kind"], task["step_id"], task["status"], task["outcome"]) == (
        "visit", "field-visit", "expired", "deadline_missed")
    assert task["due_by"] - task["created_at"] == timedelta(days=3)
    assert task["completed_at"] >= task["due_by"]
    timeline = await handle.query(CollectionWorkflow.timeline)
    kinds = [(e.kind, e.detail.get("outcome") or e.detail.get("step")) for e in timeline
             if e.kind in ("task_created", "task_outcome", "step_started")]
    assert kinds == [
        ("step_started", "field-visit"), ("task_created", "field-visit"),
        ("task_outcome", "deadline_missed"),
        ("step_started", "late-notice"), ("step_started", "write-off"),
    ]
    assert [_kind(m) for m in _messages(emulator, loan)] == [
        ("email", "late_notice"), ("email", "write_off_notice")]
    contact = await pool.fetchrow(
        "SELECT * FROM contacts WHERE loan_id = $1 AND channel = 'visit'", loan.loan_id)
    assert (contact["decision"], contact["outcome"]) == ("sent", "unanswered")


async def test_visit_borrower_not_found_escalates_to_legal(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2), amount_overdue=Decimal("8000.00"))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await _sleep_until(ts_env, _at(loan, 35, 11))  # the visit (D+35 10:00) is out, due in 7 days
    task = await _task_row(pool, loan.loan_id, "field-visit")
    assert (task["kind"], task["status"]) == ("visit", "open")
    reply = await handle.execute_update(
        Update.TASK_OUTCOME,
        TaskOutcomeInput(task_key=task["task_key"], outcome=TaskOutcome.NOT_FOUND, agent="field-7",
                         note="moved away, neighbours do not know where"),
        result_type=UpdateResult,
    )
    assert reply.accepted
    answered_at = await ts_env.get_current_time()
    await _assert_written_off(pool, handle, loan)

    task = await _task_row(pool, loan.loan_id, "field-visit")
    assert (task["status"], task["outcome"], task["agent"]) == (
        "done", "borrower_not_found", "field-7")
    # The late call (D+45) was passed over; the lawyer's letter (D+60) went out at once.
    steps = [t["step_id"] for t in await _rows(pool, "tasks", loan.loan_id)]
    assert "late-call" not in steps
    legal = await _rows(pool, "legal_actions", loan.loan_id)
    assert [a["action"] for a in legal] == ["lawyer_letter", "filing"]
    assert legal[0]["created_at"] - answered_at < timedelta(minutes=5)
    legal_stage = await pool.fetchrow(
        "SELECT * FROM stage_history WHERE loan_id = $1 AND to_stage = 'legal'", loan.loan_id)
    assert legal_stage["occurred_at"] < _at(loan, 36, 0)
    timeline = await handle.query(CollectionWorkflow.timeline)
    assert any(e.kind == "escalated" and "borrower_not_found" in e.summary for e in timeline)
    assert any(e.kind == "step_skipped" and e.detail["step"] == "late-call" for e in timeline)
    letters = [m for m in _messages(emulator, loan) if _kind(m) == ("email", "lawyer_letter")]
    assert len(letters) == 1 and "35 days overdue" in letters[0]["body"]


# ------------------------------------------------------------------------------ phone numbers


async def test_wrong_number_stops_sms_and_calls_but_not_email(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2), amount_overdue=Decimal("8000.00"))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await _sleep_until(ts_env, _at(loan, 4, 11, 30))  # the first call (D+4 11:00) is out
    task = await _task_row(pool, loan.loan_id, "early-call")
    await handle.execute_update(
        Update.TASK_OUTCOME,
        TaskOutcomeInput(task_key=task["task_key"], outcome=TaskOutcome.WRONG_NUMBER, agent="a-1"),
        result_type=UpdateResult,
    )
    await _assert_written_off(pool, handle, loan)

    sms = [_kind(m)[1] for m in emulator.messages(channel="sms", to=loan.phone)]
    assert sms == ["pre_due_reminder", "early_reminder", "early_reminder"]  # all before D+4
    emails = [_kind(m)[1] for m in emulator.messages(channel="email", to=loan.email)]
    assert emails == ["pre_due_reminder", "early_reminder", "firm_reminder", "formal_notice",
                      "late_notice", "lawyer_letter", "litigation_notice", "write_off_notice"]
    tasks = await _rows(pool, "tasks", loan.loan_id)
    # No more calls; the field visit goes to the borrower's address, not to the number.
    assert [(t["step_id"], t["outcome"]) for t in tasks] == [
        ("early-call", "wrong_number"), ("field-visit", "deadline_missed")]
    skipped = await pool.fetch(
        "SELECT step_id, channel, reason FROM contacts WHERE loan_id = $1 AND decision = 'skipped' "
        "ORDER BY occurred_at, id", loan.loan_id)
    assert [(s["step_id"], s["channel"]) for s in skipped] == [
        ("firm-reminder", "sms"), ("middle-call-1", "call"), ("middle-call-2", "call"),
        ("middle-call-3", "call"), ("middle-call-4", "call"), ("late-notice", "sms"),
        ("late-call", "call"),
    ]
    assert all(s["reason"] == "no valid phone number" for s in skipped)


# ------------------------------------------------------ suppressed addresses, delivery reports

SMS_THEN_BOTH = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="firm-reminder", day=3, hour=10, stage=Stage.MIDDLE, kind="message",
         channels=["sms", "email"], template="firm_reminder", tone="firm"),
    Step(id="late-sms", day=5, hour=10, stage=Stage.LATE, kind="message", channels=["sms"],
         template="late_notice"),
    _write_off(7),
]


async def _decisions(pool: asyncpg.Pool, loan_id: str) -> list[tuple[str, str, str, str]]:
    rows = await pool.fetch(
        "SELECT step_id, channel, decision, rule, idempotency_key FROM contacts "
        "WHERE loan_id = $1 ORDER BY occurred_at, id", loan_id)
    return [(r["step_id"], r["channel"], r["decision"], r["idempotency_key"].split("/", 1)[1])
            for r in rows]


async def test_an_opted_out_sms_is_skipped_falls_back_and_resumes_once_lifted(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=1))
    key = phone_key(loan.phone)
    await suppress(pool, key, "sms", "opt_out", OPT_OUT_RULE, "opted out", "test")
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue,
                              _policy(loan, SMS_THEN_BOTH))
    await _sleep_until(ts_env, _at(loan, 4, 12))  # early-sms and firm-reminder are done
    await lift(pool, key, "sms", "opt_out", "test")  # START
    await _assert_written_off(pool, handle, loan, [*STAGES[:4], "written_off"])
    skipped = await pool.fetch("SELECT step_id, rule, reason FROM contacts WHERE loan_id = $1 "
                               "AND decision = 'skipped' ORDER BY id", loan.loan_id)
    assert [(r["step_id"], r["rule"]) for r in skipped] == [
        ("early-sms", OPT_OUT_RULE), ("firm-reminder", OPT_OUT_RULE)]
    assert skipped[0]["reason"] == "opted out"
    decisions = await _decisions(pool, loan.loan_id)
    assert ("early-sms", "email", "sent", "early-sms-fallback/email") in decisions
    assert ("firm-reminder", "email", "sent", "firm-reminder/email") in decisions
    # Not marked unusable: once lifted, the next SMS step sends by SMS, nothing deferred.
    assert ("late-sms", "sms", "sent", "late-sms/sms") in decisions
    assert not any(d[2] == "deferred" for d in decisions), decisions
    assert [_kind(m)[1] for m in emulator.messages(channel="sms", to=loan.phone)] == [
        "late_notice"]


async def test_a_delivery_report_marks_the_number_unusable_and_falls_back_once(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=1))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue,
                              _policy(loan, SMS_THEN_BOTH))
    await _sleep_until(ts_env, _at(loan, 1, 11))  # early-sms went out by SMS
    report = DeliveryReport(
        loan_id=loan.loan_id, outbox_key=f"{workflow_id_for(loan.loan_id)}/early-sms/sms",
        step_id="early-sms", channel="sms", status="undelivered", error_code="twilio_30005",
        address_unusable=True, at=await ts_env.get_current_time())
    stranger = DeliveryReport(**{**report.__dict__, "outbox_key": "collection-x/early-sms/sms"})
    for r in (stranger, report, report):  # not its send; then one reported twice
        await handle.signal(CollectionWorkflow.delivery_failed, r)
    await _assert_written_off(pool, handle, loan, [*STAGES[:4], "written_off"])
    decisions = await _decisions(pool, loan.loan_id)
    assert [d for d in decisions if d[0] == "early-sms"] == [
        ("early-sms", "sms", "sent", "early-sms/sms"),
        ("early-sms", "email", "sent", "early-sms-fallback/email")]
    # The number is unusable from the report on: later SMS skipped, late-sms falls back too.
    assert ("firm-reminder", "sms", "skipped", "firm-reminder/sms/skipped") in decisions
    assert ("late-sms", "email", "sent", "late-sms-fallback/email") in decisions
    assert len(emulator.messages(channel="sms", to=loan.phone)) == 1
    failed = [e for e in await handle.query(CollectionWorkflow.timeline)
              if e.kind == "delivery_failed"]
    assert len(failed) == 2 and "address unusable" in failed[0].summary
    assert failed[0].detail["outbox_key"] == report.outbox_key


# ---------------------------------------------------------------------------- cease contact


async def test_cease_stops_everything_but_notices_the_rules_allow(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=5))  # 1200.00: agency, letter, filing
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    await _sleep_until(ts_env, _at(loan, -3, 12))  # after the pre-due reminder
    reply = await handle.execute_update(Update.CEASE,
                                        CeaseInput(actor="agent-3", reason="written request"),
                                        result_type=UpdateResult)
    assert reply.accepted
    await _assert_written_off(pool, handle, loan)

    assert [_kind(m) for m in _messages(emulator, loan)] == [
        ("sms", "pre_due_reminder"), ("email", "pre_due_reminder"),
        ("email", "agency_placement_notice"),  # remedy_notice
        # placed D+35 to D+125: the lawyer's letter (D+60) is superseded by the filing (D+90)
        ("email", "litigation_notice"),  # remedy_notice
        ("email", "write_off_notice"),  # collection_ending
    ]
    assert await _rows(pool, "tasks", loan.loan_id) == []
    assert [a["action"] for a in await _rows(pool, "legal_actions", loan.loan_id)] == [
        "agency_placement", "filing"]
    skipped = await pool.fetch(
        "SELECT step_id, channel, rule FROM contacts WHERE loan_id = $1 AND decision = 'skipped' "
        "ORDER BY occurred_at, id", loan.loan_id)
    assert [(s["step_id"], s["channel"]) for s in skipped] == [
        ("early-sms", "sms"), ("early-reminder", "sms"), ("early-reminder", "email"),
        ("early-call", "call"), ("firm-reminder", "sms"), ("firm-reminder", "email"),
        ("middle-call-1", "call"), ("middle-call-2", "call"), ("formal-notice", "email"),
        ("middle-call-3", "call"), ("middle-call-4", "call"), ("late-notice", "sms"),
        ("late-notice", "email"),
    ]
    assert {s["rule"] for s in skipped} == {"cn.cease_communication"}
    status = await handle.query(CollectionWorkflow.status)
    assert status.ceased


# ------------------------------------------------------------------------------ the us pack


def _us_loan(loan_id: str, due: date, **overrides: Any) -> LoanInput:
    fields: dict[str, Any] = {
        "timezone": "America/New_York", "currency": "USD", "policy": "us_default",
        "borrower_name": "Pat Doe", "phone": "+1202555" + uuid.uuid4().hex[:4].translate(
            str.maketrans("abcdef", "012345")),
        "amount_overdue": Decimal("1200.00"),
    }
    fields.update(overrides)
    return make_loan(loan_id, due, **fields)


async def test_us_validation_notice_first_and_opt_out_in_every_sms(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    now = await ts_env.get_current_time()
    loan = _us_loan(loan_id, compliance.local(now, "America/New_York").date() + timedelta(days=5))
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue)
    result = await _result(handle)
    assert result.state == CaseState.WRITTEN_OFF

    msgs = _messages(emulator, loan)
    kinds = [_kind(m) for m in msgs]
    assert kinds[:3] == [("email", "validation_notice"), ("sms", "pre_due_reminder"),
                         ("email", "pre_due_reminder")], kinds
    assert kinds.count(("email", "validation_notice")) == 1
    notice = msgs[0]["body"]
    assert "VALIDATION NOTICE" in notice and "1,200.00 USD" in notice and "dispute" in notice
    sms = [m for m in msgs if m["channel"] == "sms"]
    assert len(sms) == 5  # pre-due, early, early, firm, late
    assert all("Reply STOP to opt out." in m["body"] for m in sms), [m["body"] for m in sms]
    assert all("unsubscribe" in m["body"].lower() for m in msgs if m["channel"] == "email")
    contacts = [c for c in await _rows(pool, "contacts", loan.loan_id, "occurred_at, id")
                if c["decision"] == "sent"]
    assert (contacts[0]["step_id"], contacts[0]["template"]) == (
        "validation-notice", "validation_notice")
    assert contacts[0]["occurred_at"] <= contacts[1]["occurred_at"]


async def test_us_validation_notice_precedes_a_first_call(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    now = await ts_env.get_current_time()
    loan = _us_loan(loan_id, compliance.local(now, "America/New_York").date() + timedelta(days=2))
    policy = _policy(loan, [Step(id="first-call", day=1, hour=11, stage=Stage.EARLY, kind="call"),
                            _write_off(3)])
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue, policy)
    await _result(handle)
    [task] = await _rows(pool, "tasks", loan.loan_id)
    notices = [m for m in _messages(emulator, loan) if _kind(m) == ("email", "validation_notice")]
    assert len(notices) == 1
    row = await pool.fetchrow(
        "SELECT * FROM contacts WHERE loan_id = $1 AND step_id = 'validation-notice'", loan.loan_id)
    assert row["decision"] == "sent" and row["occurred_at"] <= task["created_at"]


def _next_dst_change(after: date, tz: str) -> date:
    """The first local date after `after` on which the zone's UTC offset changes (early morning)."""
    zone = ZoneInfo(tz)
    day = after
    while True:
        before = datetime.combine(day, time(12), zone).utcoffset()
        if datetime.combine(day + timedelta(days=1), time(12), zone).utcoffset() != before:
            return day + timedelta(days=1)
        day += timedelta(days=1)


async def test_us_evening_step_deferred_across_dst_change(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    tz = "America/New_York"
    now = await ts_env.get_current_time()
    change = _next_dst_change(compliance.local(now, tz).date() + timedelta(days=3), tz)
    loan = _us_loan(loan_id, change - timedelta(days=1))  # due the day before the clocks change
    policy = _policy(loan, [
        Step(id="pre-due-reminder", day=-1, hour=10, stage=Stage.PRE_DUE, kind="message",
             channels=["sms", "email"], template="pre_due_reminder"),
        # 22:00 on the due date is after Regulation F's 21:00: deferred to 08:00 the next morning,
        # which is on the other side of the clock change.
        Step(id="evening-sms", day=0, hour=22, stage=Stage.EARLY, kind="message", channels=["sms"],
             template="early_reminder"),
        _write_off(3),
    ])
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue, policy)
    await _result(handle)

    zone = ZoneInfo(tz)
    planned = datetime.combine(loan.due_date, time(22), zone)
    opening = datetime.combine(change, time(8), zone)
    planned_offset, opening_offset = planned.utcoffset(), opening.utcoffset()
    assert planned_offset is not None and opening_offset is not None
    assert planned_offset != opening_offset
    expected_gap = timedelta(hours=10) + (planned_offset - opening_offset)
    # 11 hours in autumn, 9 in spring, instead of the 10 of an ordinary night.
    assert opening.astimezone(UTC) - planned.astimezone(UTC) == expected_gap

    rows = await pool.fetch("SELECT * FROM contacts WHERE loan_id = $1 AND step_id = 'evening-sms' "
                            "ORDER BY occurred_at, id", loan.loan_id)
    assert [(r["decision"], r["channel"]) for r in rows] == [("deferred", "sms"), ("sent", "sms")]
    deferred, sent = rows
    assert deferred["rule"] == "us.regf.inconvenient_time_8_21"
    assert f"deferred to {change.isoformat()} 08:00 local" in deferred["reason"]
    assert abs(deferred["occurred_at"] - planned) < timedelta(seconds=5)
    assert timedelta(0) <= sent["occurred_at"] - opening < timedelta(seconds=5)
    assert compliance.local(sent["occurred_at"], tz).strftime("%Y-%m-%d %H:%M") == f"{change} 08:00"
    assert sent["local_date"] == change
    [evening] = [m for m in emulator.messages(channel="sms", to=loan.phone)
                 if _kind(m)[1] == "early_reminder"]
    assert "Reply STOP" in evening["body"]


# ------------------------------------------------------------------------ pinned policy version


_PIN_POLICY = """
name = "default-pin-test"
version = "{version}"
rule_pack = "cn"

[[segments]]
name = "all"
ladder = "main"

[[ladders.main]]
id = "{step}"
day = 1
hour = 10
stage = "early"
kind = "message"
channels = ["{channel}"]
template = "{template}"

[[ladders.main]]
id = "write-off"
day = {write_off}
hour = 10
stage = "written_off"
kind = "write_off"
template = "write_off_notice"
notice = "collection_ending"
"""


async def test_case_keeps_the_policy_version_it_started_with(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, emulator: ProviderEmulator,
) -> None:
    path = POLICIES_DIR / f"_test_pin_{uuid.uuid4().hex[:8]}.toml"
    today = today_of(await ts_env.get_current_time())
    a, b = (make_loan(f"T{uuid.uuid4().hex[:10]}", due=today + timedelta(days=2),
                      policy="default-pin-test") for _ in range(2))
    try:
        path.write_text(_PIN_POLICY.format(version="1", step="v1-sms", channel="sms",
                                           template="early_reminder", write_off=3))
        handle_a = await start_case(ts_env.client, a, ts_worker.task_queue)
        await eventually(lambda: _status_or_none(handle_a), lambda s: s is not None)
        path.write_text(_PIN_POLICY.format(version="2", step="v2-email", channel="email",
                                           template="firm_reminder", write_off=5))
        handle_b = await start_case(ts_env.client, b, ts_worker.task_queue)
        await eventually(lambda: _status_or_none(handle_b), lambda s: s is not None)
    finally:
        path.unlink(missing_ok=True)

    status_a = await handle_a.query(CollectionWorkflow.status)
    status_b = await handle_b.query(CollectionWorkflow.status)
    assert (status_a.policy_name, status_a.policy_version) == ("default-pin-test", "1")
    assert (status_b.policy_name, status_b.policy_version) == ("default-pin-test", "2")
    assert status_a.next_action == "v1-sms (message)"
    assert status_b.next_action == "v2-email (message)"
    for handle in (handle_a, handle_b):
        assert (await _result(handle)).state == CaseState.WRITTEN_OFF
    assert [_kind(m) for m in _messages(emulator, a)] == [("sms", "early_reminder"),
                                                          ("email", "write_off_notice")]
    assert [_kind(m) for m in _messages(emulator, b)] == [("email", "firm_reminder"),
                                                          ("email", "write_off_notice")]
    cases = {r["loan_id"]: r for r in await pool.fetch(
        "SELECT * FROM cases WHERE loan_id = ANY($1::text[])", [a.loan_id, b.loan_id])}
    assert cases[a.loan_id]["policy_version"] == "1" and cases[b.loan_id]["policy_version"] == "2"
    # Each case wrote off on its own version's day: D+3 under version 1, D+5 under version 2.
    for loan, day in ((a, 3), (b, 5)):
        closed = cases[loan.loan_id]["closed_at"]
        assert compliance.local(closed, loan.timezone).date() == loan.due_date + timedelta(days=day)


async def _status_or_none(handle: WorkflowHandle) -> Any:
    try:
        return await handle.query(CollectionWorkflow.status)
    except Exception:
        return None


# ------------------------------------------------------------ NIFA: 3 connected calls a day


async def test_one_borrower_two_loans_never_over_three_connected_calls_a_day(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
) -> None:
    today = today_of(await ts_env.get_current_time())
    borrower = f"B{uuid.uuid4().hex[:10]}"
    phone = "+86139" + str(uuid.uuid4().int)[:8]
    loans = [make_loan(f"T{uuid.uuid4().hex[:10]}", due=today + timedelta(days=1),
                       borrower_id=borrower, phone=phone) for _ in range(2)]
    steps = [Step(id=f"call-{h}", day=1, hour=h, stage=Stage.EARLY, kind="call")
             for h in (9, 10, 11, 12)]
    steps.append(_write_off(5))
    handles = [await start_case(ts_env.client, loan, ts_worker.task_queue, _policy(loan, steps))
               for loan in loans]
    ids = [loan.loan_id for loan in loans]

    async def answer_open_tasks() -> int:
        rows = await pool.fetch(
            "SELECT * FROM tasks WHERE loan_id = ANY($1::text[]) AND status = 'open'", ids)
        for r in rows:
            handle, key = handles[ids.index(r["loan_id"])], r["task_key"]
            await handle.execute_update(Update.TASK_OUTCOME, TaskOutcomeInput(
                task_key=key, outcome=TaskOutcome.REACHED, agent="dialer"),
                result_type=UpdateResult)
            await eventually(
                lambda: pool.fetchval("SELECT status FROM tasks WHERE task_key = $1",
                                      key),  # noqa: B023
                lambda s: s == "done")
        return len(rows)

    call_steps = {st.id for st in steps if st.kind == "call"}

    async def calling() -> bool:
        """True while a call step of either loan has neither an outcome nor been passed over."""
        for handle in handles:
            settled = set()
            for e in await handle.query(CollectionWorkflow.timeline):
                if e.kind == "step_skipped":
                    settled.add(e.detail["step"])
                elif e.kind == "task_outcome":
                    settled.add(e.detail["task_key"].rsplit("/", 1)[1])
            if settled < call_steps:
                return True
        return False

    # Hour by hour through the calling days, answering every call as soon as its task appears.
    loan = loans[0]
    hour = _at(loan, 1, 8, 30)
    while await calling():
        assert hour < _at(loan, 5, 0), "calls still pending after four days"
        await _sleep_until(ts_env, hour)
        await asyncio.sleep(0.05)
        await answer_open_tasks()
        hour += timedelta(hours=1)
    for handle in handles:
        assert (await _result(handle)).state == CaseState.WRITTEN_OFF

    calls = await pool.fetch(
        "SELECT * FROM contacts WHERE borrower_key = $1 AND channel = 'call' "
        "ORDER BY occurred_at, id", borrower)
    connected = [c for c in calls if c["decision"] == "sent"]
    assert all(c["outcome"] == "connected" for c in connected), [dict(c) for c in connected]
    per_day = Counter(compliance.local(c["occurred_at"], loan.timezone).date() for c in connected)
    assert max(per_day.values()) <= 3, per_day
    assert per_day[loan.due_date + timedelta(days=1)] == 3  # the cap was reached on the calling day
    first_day = [c for c in connected if c["local_date"] == loan.due_date + timedelta(days=1)]
    assert {c["loan_id"] for c in first_day} == set(ids)  # both loans' calls counted together
    deferred = [c for c in calls if c["decision"] == "deferred"]
    assert deferred and {c["rule"] for c in deferred} == {"cn.nifa.connected_calls_per_day"}
    assert all("deferred to" in c["reason"] and "08:00 local" in c["reason"] for c in deferred)
    tasks = await pool.fetch("SELECT * FROM tasks WHERE loan_id = ANY($1::text[])", ids)
    assert tasks and {(t["status"], t["outcome"]) for t in tasks} == {("done", "reached")}
    assert len(connected) == len(tasks)


async def test_cease_withdraws_an_open_call_task(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2))
    policy = _policy(loan, [
        Step(id="early-call", day=1, hour=10, stage=Stage.EARLY, kind="call", deadline_days=2),
        Step(id="early-reminder", day=2, hour=10, stage=Stage.EARLY, kind="message",
             channels=["sms"], template="early_reminder"),
        _write_off(4),
    ])
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue, policy)
    await _sleep_until(ts_env, _at(loan, 1, 11))
    task = await _task_row(pool, loan.loan_id, "early-call")
    assert task["status"] == "open"
    await handle.execute_update(Update.CEASE, CeaseInput(actor="agent-3"),
                                result_type=UpdateResult)
    # The dialer must not ring a borrower who asked us to stop: the open call is withdrawn at once.
    task = await eventually(lambda: _task_row(pool, loan.loan_id, "early-call"),
                            lambda r: r["status"] != "open")
    assert (task["status"], task["outcome"], task["reason"]) == (
        "withdrawn", "withdrawn", "borrower asked to cease contact")
    assert task["completed_at"] < task["due_by"]
    await _assert_written_off(pool, handle, loan, ["pre_due", "early", "written_off"])
    assert [_kind(m) for m in _messages(emulator, loan)] == [("email", "write_off_notice")]


# ------------------------------------------------ the case's decisions without a server


def _case_state(steps: list[Step], *, due: date, **changes: Any) -> Any:
    from dataclasses import replace

    from workflows.case_state import CaseData
    from workflows.ledger import balance_of

    loan = make_loan("PURE-1", due)
    b = balance_of(loan.amount_overdue, loan.interest, loan.fees)
    opened = datetime.combine(due, time(0), tzinfo=UTC)
    s = CaseData(loan=loan, policy=_policy(loan, steps), clock_origin=opened, opened_at=opened,
                 due_date=due, principal=b.principal, interest=b.interest, fees=b.fees,
                 borrower_key="p:x")
    return replace(s, **changes)


_PURE_STEPS = [
    Step(id="sms-1", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="sms-2", day=3, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="big-visit", day=4, hour=10, stage=Stage.MIDDLE, kind="visit",
         min_outstanding=Decimal("1000000")),
    Step(id="late-call", day=9, hour=11, stage=Stage.LATE, kind="call"),
    _write_off(20),
]


def test_due_step_supersedes_earlier_steps_and_skips_out_of_bounds_ones() -> None:
    from workflows import ladder

    due = date(2026, 3, 1)
    s = _case_state(_PURE_STEPS, due=due)
    decided = ladder.due_step(s, _at(s.loan, 5, 0))
    assert decided.step is not None and decided.step.id == "sms-2"
    assert [(k.step.id, k.why.split(" ")[0]) for k in decided.skips] == [
        ("big-visit", "balance"), ("sms-1", "superseded")]
    assert s.done_steps == []  # a decision, not yet recorded
    assert ladder.next_step_time(s) == ladder.step_time(s, _PURE_STEPS[0])


def test_escalation_lands_on_the_next_stage_and_passes_over_the_rest() -> None:
    from workflows import ladder
    from workflows.case import Case
    from workflows.runtime import ClockRuntime

    s = _case_state(_PURE_STEPS, due=date(2026, 3, 1), stage=Stage.EARLY, done_steps=["sms-1"])
    esc = ladder.escalation(s)
    assert esc is not None and esc.target.id == "big-visit"
    assert [st.id for st in esc.skipped] == ["sms-2"]
    case = Case(s, ClockRuntime(lambda: _at(s.loan, 2, 12)))
    case.escalate("visit outcome refused")
    assert s.pull_forward == ["big-visit"] and "sms-2" in s.done_steps
    assert [e.kind for e in s.timeline] == ["step_skipped", "escalated"]


def test_wrong_number_makes_every_phone_channel_unusable() -> None:
    from workflows import addresses

    s = _case_state(_PURE_STEPS, due=date(2026, 3, 1))
    s.mark_unusable("phone", "wrong number")
    # Every channel of the table on the phone field: SMS, agent calls, voice reminders.
    assert s.unusable == {"sms": "wrong number", "call": "wrong number", "voice": "wrong number"}
    assert addresses.unusable_reason(s, "sms") == "no valid phone number"
    assert addresses.unusable_reason(s, "email") is None
    assert addresses.unusable_reason(s, "visit") is None  # goes to the postal address


def test_state_from_older_runs_keeps_its_unusable_channels() -> None:
    """Continue-as-new state written before `unusable` carried phone_ok/email_ok flags."""
    from infra.codec import data_converter
    from workflows.case_state import CaseData

    s = _case_state(_PURE_STEPS, due=date(2026, 3, 1))
    converter = data_converter(None).payload_converter
    old = converter.to_payloads([s])[0]
    import json

    raw = json.loads(old.data)
    raw.pop("unusable")
    raw.update(phone_ok=False, email_ok=True)
    old.data = json.dumps(raw).encode()
    (back,) = converter.from_payloads([old], [CaseData])
    assert set(back.unusable) == {"sms", "call", "voice"}
    assert "phone_ok" not in json.loads(converter.to_payloads([back])[0].data)


def test_contact_keys_come_from_the_channel_table() -> None:
    """The keys the caps count under are the ones every recorded case used."""
    import hashlib

    from workflows import addresses

    loan = make_loan("PURE-2", date(2026, 3, 1))

    def h(text: str) -> str:
        return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:24]

    assert addresses.contact_key(loan, "sms") == f"p:{h(loan.phone)}"
    assert addresses.contact_key(loan, "call") == addresses.contact_key(loan, "visit")
    assert addresses.contact_key(loan, "email") == f"e:{h(loan.email)}"
    assert addresses.borrower_key(loan) == (loan.borrower_id or f"p:{h(loan.phone)}")


def test_simulation_is_chosen_once_as_the_effects() -> None:
    from workflows.effects import DurableEffects, effects_for
    from workflows.simulation import SimulatedEffects

    s = _case_state(_PURE_STEPS, due=date(2026, 3, 1))
    assert isinstance(effects_for(s), DurableEffects)
    s.simulate = True
    fx = effects_for(s)
    assert isinstance(fx, SimulatedEffects) and not fx.contacts_pending()
