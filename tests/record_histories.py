"""Record the event histories that tests/test_replay.py replays against the current workflow code.

    PYTHONPATH=. .venv/bin/python tests/record_histories.py            # every scenario, as -v9
    PYTHONPATH=. .venv/bin/python tests/record_histories.py write_off  # some of them
    PYTHONPATH=. .venv/bin/python tests/record_histories.py --out /tmp/h  # elsewhere (to compare)

Each scenario runs a real CollectionWorkflow on the time-skipping test server, with the real
activities (a throwaway embedded PostgreSQL, the provider emulator), and saves
`(await handle.fetch_history()).to_json()` to `tests/histories/<name>-<version>.json`. The
workflow id is `collection-REPLAY-<name>` (the loan id is `REPLAY-<name>`); the replay test relies
on that.

When to re-record: only for a change that no running workflow can have passed through (for
instance a brand-new feature before its first release). A change to a path that running workflows
have already taken must replay the OLD histories unchanged: guard it with `workflow.patched(...)`
(see tests/test_replay.py), keep the old history files, and add a new recording next to them
(`<name>-v2`) rather than overwriting them: `--version` names the recording (`-v6` by default:
an agency placement, WeCom and voice follow-ups, a suppressed SMS skipped and fallen back from,
the `delivery_failed` signal; `<name>.json` and -v2 to -v5 are the earlier shapes, and the
scenarios new in v6 are recorded only as -v6). From -v7 (issue 18) a case starts as the service
starts it, the personal fields in the borrower vault and a reference in the input (V7_SCENARIOS;
`--inline --version v6` records the shape before it). From -v8 (issue 21) a case's writes travel
with its actions (workflows/carried_writes.py), so every scenario is recorded again. From -v9 a
notice's suppression check travels with its send (NOTICE_CHECK_PATCH): every scenario again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import pydantic_core  # noqa: E402
from temporalio.client import WorkflowFailureError, WorkflowHandle  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.wiring import Providers  # noqa: E402
from contracts.contact_keys import OPT_OUT_RULE, phone_key  # noqa: E402
from contracts.messages import (  # noqa: E402
    CaseState,
    CloseInput,
    DeliveryReport,
    HoldInput,
    Installment,
    LoanInput,
    PaymentInput,
    PaymentResult,
    PaymentStatus,
    PlanInput,
    PromiseInput,
    Stage,
    TaskOutcome,
    TaskOutcomeInput,
    UpdateResult,
)
from contracts.names import WORKFLOW_TYPE, Update, workflow_id_for  # noqa: E402
from contracts.policy import ResolvedPolicy, Step  # noqa: E402
from infra.codec import data_converter, generate_key, parse_keys  # noqa: E402
from infra.database import EmbeddedPostgres, create_pool, migrate  # noqa: E402
from infra.emulator import ProviderEmulator  # noqa: E402
from infra.emulator import wecom as wecom_emulator  # noqa: E402
from infra.temporal_server import start_test_server  # noqa: E402
from service.provider_events import lift, suppress  # noqa: E402
from service.vault import Vault  # noqa: E402
from tests.helpers import at_local, make_loan, pinned, start_case, today_of, utc_at  # noqa: E402
from worker import running_worker  # noqa: E402
from workflows.collection_workflow import CollectionWorkflow  # noqa: E402

HISTORIES = Path(__file__).resolve().parent / "histories"
TASK_QUEUE = "record-histories"

# Deterministic borrower data: the recordings are committed, they hold no real person.
PHONE = "+8613800138000"
REFUSED_PHONE = "+8613800138001"  # the emulator refuses SMS to it in `sms_refused`
VOICE_PHONE = "+8613800138002"  # answered by a person in `voice_answered`
OPTED_OUT_PHONE = "+8613800138003"  # opted out of SMS in `sms_opted_out`
UNDELIVERED_PHONE = "+8613800138004"  # reported undeliverable in `sms_undelivered`


# From v7 (issue 18) cases start as the service starts them: the personal fields stored in the
# vault, the input carrying a reference and the facts computed at start. `record` sets it.
_VAULT: list[Vault] = []


async def _start(env: WorkflowEnvironment, loan: LoanInput,
                 policy: ResolvedPolicy | None = None) -> WorkflowHandle:
    if _VAULT:
        loan, _ = await _VAULT[0].store(loan)
    return await start_case(env.client, loan, TASK_QUEUE, policy)


def loan_for(name: str, due: date) -> LoanInput:
    loan_id = f"REPLAY-{name}"
    return make_loan(loan_id, due=due, phone=PHONE, email=f"{loan_id.lower()}@example.com")


def cny(amount: str) -> Decimal:
    return Decimal(amount)


async def paid_in_full(env: WorkflowEnvironment, today: date,
               emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """Reminders before and after the due date, then one payment of the whole balance."""
    loan = loan_for("paid_in_full", today + timedelta(days=5))
    handle = await _start(env, loan)  # policy resolved by the activity
    await env.sleep(timedelta(days=7))  # D-3 reminder, D+1 SMS
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("1200.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID, result
    return handle


SMALL_LADDER = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="early-call", day=3, hour=11, stage=Stage.EARLY, kind="call"),
    Step(id="firm-reminder", day=5, hour=10, stage=Stage.MIDDLE, kind="message",
         channels=["sms", "email"], template="firm_reminder", tone="firm"),
    Step(id="lawyer-letter", day=8, hour=10, stage=Stage.LEGAL, kind="legal",
         action="lawyer_letter",
         template="lawyer_letter", tone="legal", notice="remedy_notice"),
    Step(id="write-off", day=10, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", tone="formal", notice="collection_ending"),
]


async def write_off(env: WorkflowEnvironment, today: date,
               emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """Nobody pays or answers: messages, an unanswered call, a lawyer's letter, write-off."""
    loan = loan_for("write_off", today)
    policy = pinned(loan).model_copy(update={"steps": SMALL_LADDER, "ladder_name": "replay-small"})
    handle = await _start(env, loan, policy)
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result
    return handle


async def promise_kept(env: WorkflowEnvironment, today: date,
               emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """A promise to pay part of the balance, kept; then the rest is paid."""
    loan = loan_for("promise_kept", today - timedelta(days=2))
    handle = await _start(env, loan, pinned(loan))
    await env.sleep(timedelta(hours=1))
    await handle.execute_update(Update.PROMISE, PromiseInput(
        agent="agent-7", amount=cny("500.00"), currency="CNY",
        promised_date=today + timedelta(days=3)), result_type=UpdateResult)
    # Two hours past a step's instant: a signal's task cancelling a timer that fired while the
    # task was with the worker strands the run on the time-skipping server (sdk-java#3088).
    await env.sleep(timedelta(days=2, hours=2))
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("500.00"), "CNY"))
    await env.sleep(timedelta(days=1, hours=2))  # not at the call task's deadline, as above
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-2", cny("700.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID, result
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert "promise_kept" in kinds, kinds
    return handle


async def plan_broken(env: WorkflowEnvironment, today: date,
               emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """A two-installment plan: the first is paid, the second is missed; escalation resumes and an
    agent closes the case."""
    loan = loan_for("plan_broken", today - timedelta(days=2))
    handle = await _start(env, loan, pinned(loan))
    await env.sleep(timedelta(hours=1))
    await handle.execute_update(Update.PLAN, PlanInput(
        agent="agent-7", currency="CNY", installments=[
            Installment(cny("600.00"), today + timedelta(days=5)),
            Installment(cny("600.00"), today + timedelta(days=12)),
        ]), result_type=UpdateResult)
    await env.sleep(timedelta(days=4))
    await handle.signal(CollectionWorkflow.pay, PaymentInput("inst-1", cny("600.00"), "CNY"))
    await env.sleep(timedelta(days=14))  # past the second installment and its grace
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert "plan_broken" in kinds, kinds
    await handle.execute_update(Update.CLOSE, CloseInput(actor="agent-7", reason="other"),
                                result_type=UpdateResult)
    result = await handle.result()
    assert result.state == CaseState.CLOSED, result
    return handle


async def sms_refused(env: WorkflowEnvironment, today: date,
               emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """The provider refuses the number: the SMS-only step falls back to e-mail (the channel
    table's fallback, under ONE_FALLBACK_PATCH), later SMS steps are skipped, then a payment."""
    loan = make_loan("REPLAY-sms_refused", due=today - timedelta(days=1), phone=REFUSED_PHONE,
                     email="replay-sms_refused@example.com")
    emulator.add_fault(loan.phone, "invalid_number", channel="sms")
    policy = pinned(loan).model_copy(update={"steps": SMALL_LADDER, "ladder_name": "replay-small"})
    handle = await _start(env, loan, policy)
    await env.sleep(timedelta(days=5, hours=12))  # early SMS refused, call skipped, firm reminder
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("1200.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID, result
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert "contact_failed" in kinds and "contact_skipped" in kinds, kinds
    return handle


CALL_LADDER = [
    Step(id="early-call", day=1, hour=11, stage=Stage.EARLY, kind="call"),
    Step(id="second-call", day=3, hour=11, stage=Stage.EARLY, kind="call"),
    Step(id="write-off", day=10, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", tone="formal", notice="collection_ending"),
]


async def call_breach(env: WorkflowEnvironment, today: date,
                      emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v5 (TASK_RULES_PATCH): an agent reports a call made at 23:30 local (a breach,
    recorded at its time); a dispute withdraws the next call task; a payment in the wrong
    currency through the `pay` update is kept as unapplied; then the case is closed."""
    loan = loan_for("call_breach", today)
    policy = pinned(loan).model_copy(update={"steps": CALL_LADDER, "ladder_name": "replay-calls"})
    handle = await _start(env, loan, policy)
    day1 = today + timedelta(days=1)
    await _sleep_to(env, utc_at(day1, 23) + timedelta(minutes=45))
    key = "collection-REPLAY-call_breach/early-call"
    await handle.execute_update(Update.TASK_OUTCOME, TaskOutcomeInput(
        task_key=key, outcome=TaskOutcome.REACHED, agent="agent-7",
        at=utc_at(day1, 23) + timedelta(minutes=30)), result_type=UpdateResult)
    await _sleep_to(env, utc_at(today + timedelta(days=3), 12))
    await handle.execute_update(Update.HOLD, HoldInput(actor="sup", kind="dispute"),
                                result_type=UpdateResult)
    result = await handle.execute_update(Update.PAY,
                                         PaymentInput("pay-usd", cny("100.00"), "USD"),
                                         result_type=PaymentResult)
    assert result.status == PaymentStatus.UNAPPLIED, result
    await handle.execute_update(Update.CLOSE, CloseInput(actor="agent-7", reason="other"),
                                result_type=UpdateResult)
    closed = await handle.result()
    assert closed.state == CaseState.CLOSED, closed
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert {"compliance_breach", "task_withdrawn", "payment_unapplied"} <= set(kinds), kinds
    return handle


async def bad_start(env: WorkflowEnvironment, today: date,
                    emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v5 (INPUT_CHECK_PATCH): a plain-JSON start with an impossible time zone fails at
    once."""
    loan = loan_for("bad_start", today)
    raw = {"loan": {**json.loads(pydantic_core.to_json(loan)), "timezone": "Mars/Olympus"}}
    handle = await env.client.start_workflow(
        WORKFLOW_TYPE, raw, id=workflow_id_for(loan.loan_id), task_queue=TASK_QUEUE)
    try:
        await handle.result()
    except WorkflowFailureError:
        return handle
    raise AssertionError("a start with time zone Mars/Olympus did not fail")


PLACEMENT_LADDER = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    Step(id="agency-placement", day=2, hour=10, stage=Stage.LATE, kind="legal",
         action="agency_placement", template="agency_placement_notice", tone="formal",
         notice="remedy_notice"),
    Step(id="after-sms", day=5, hour=10, stage=Stage.LATE, kind="message", channels=["sms"],
         template="late_notice"),
    Step(id="write-off", day=100, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", tone="formal", notice="collection_ending"),
]


async def agency_placement(env: WorkflowEnvironment, today: date,
                           emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v6 (PLACEMENT_PATCH): the agency_placement step places the case with the roster's
    agency (1200 CNY: huaxin, 90 days), the ladder pauses, a payment while placed counts as
    recovered, the term expires on its durable timer and the ladder resumes to write-off."""
    loan = loan_for("agency_placement", today)
    policy = pinned(loan).model_copy(update={"steps": PLACEMENT_LADDER,
                                             "ladder_name": "replay-placement"})
    handle = await _start(env, loan, policy)
    await _sleep_to(env, utc_at(today + timedelta(days=2), 12))
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("100.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result
    ended = [e.detail for e in await handle.query(CollectionWorkflow.timeline)
             if e.kind == "placement_ended"]
    assert [(d["agency_id"], d["reason"], d["recovered"]) for d in ended] == [
        ("huaxin", "term_expired", "100.00")], ended
    return handle


def _one_step(step: Step) -> list[Step]:
    return [step, Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                       template="write_off_notice", notice="collection_ending")]


async def wecom_confirmed(env: WorkflowEnvironment, today: date,
                          emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v6 (FOLLOW_UP_PATCH): a WeCom step becomes a task for the staff member, who
    confirms it; the message counts as sent, nothing falls back."""
    _, today = await at_local(env, 9)
    loan = make_loan("REPLAY-wecom_confirmed", due=today - timedelta(days=1), phone=PHONE,
                     email="replay-wecom_confirmed@example.com",
                     wecom_external_userid="wmREPLAYwecomconfirmed")
    steps = _one_step(Step(id="wecom-reminder", day=1, hour=10, stage=Stage.EARLY,
                           kind="message", channels=["wecom"], template="early_reminder"))
    handle = await _start(env, loan, pinned(loan).model_copy(update={"steps": steps}))
    await env.sleep(timedelta(hours=1, minutes=1))
    for _ in range(200):
        if any(t["external_userid"] == loan.wecom_external_userid
               for t in emulator.wecom.tasks()):
            break
        await asyncio.sleep(0.05)
    assert emulator.wecom.confirm(external_userid=loan.wecom_external_userid) == 1
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result
    kinds = [e.kind for e in await handle.query(CollectionWorkflow.timeline)]
    assert "contact_pending" in kinds and "contact_sent" in kinds, kinds
    return handle


async def voice_answered(env: WorkflowEnvironment, today: date,
                         emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v6 (FOLLOW_UP_PATCH): an automated voice reminder, answered by the borrower, is
    recorded with its outcome."""
    _, today = await at_local(env, 9)
    emulator.calls.set_behaviour(VOICE_PHONE, "completed", "human")
    loan = make_loan("REPLAY-voice_answered", due=today - timedelta(days=1), phone=VOICE_PHONE,
                     email="replay-voice_answered@example.com")
    steps = _one_step(Step(id="voice-reminder", day=1, hour=10, stage=Stage.EARLY,
                           kind="message", channels=["voice"], template="early_reminder"))
    handle = await _start(env, loan, pinned(loan).model_copy(update={"steps": steps}))
    result = await handle.result()
    assert result.state == CaseState.WRITTEN_OFF, result
    outcomes = [e.detail.get("outcome") for e in await handle.query(CollectionWorkflow.timeline)
                if e.kind == "call_outcome"]
    assert outcomes == ["connected"], outcomes
    return handle


async def sms_opted_out(env: WorkflowEnvironment, today: date,
                        emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v6 (SUPPRESSED_PATCH): the borrower has opted out of SMS (a `contact_suppressions`
    row, as the STOP webhook writes it): the SMS-only step is skipped with the opt-out rule and
    goes out by e-mail; START lifts it, and the next step's SMS goes out; then a payment."""
    loan = make_loan("REPLAY-sms_opted_out", due=today - timedelta(days=1), phone=OPTED_OUT_PHONE,
                     email="replay-sms_opted_out@example.com")
    key = phone_key(loan.phone)
    await suppress(pool, key, "sms", "opt_out", OPT_OUT_RULE,
                   "the borrower replied an opt-out keyword", "record-histories")
    policy = pinned(loan).model_copy(update={"steps": SMALL_LADDER, "ladder_name": "replay-small"})
    handle = await _start(env, loan, policy)
    await _sleep_to(env, utc_at(today + timedelta(days=3), 12))  # early SMS skipped, call
    await lift(pool, key, "sms", "opt_out", "record-histories")
    await _sleep_to(env, utc_at(today + timedelta(days=4), 12))  # firm reminder, SMS again
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("1200.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID, result
    timeline = await handle.query(CollectionWorkflow.timeline)
    skipped = [e for e in timeline if e.kind == "contact_skipped"]
    assert [e.rule for e in skipped] == [OPT_OUT_RULE], [e.summary for e in timeline]
    sent = [e.detail.get("channel") for e in timeline if e.kind == "contact_sent"]
    assert sent[:3] == ["email", "sms", "email"], [e.summary for e in timeline]
    return handle


async def sms_undelivered(env: WorkflowEnvironment, today: date,
                          emulator: ProviderEmulator, pool: asyncpg.Pool) -> WorkflowHandle:
    """From v6 (DELIVERY_FAILED_PATCH): Twilio accepts the SMS-only step's message, then reports
    it undeliverable (30005, the `delivery_failed` signal the webhook sends): the phone is marked
    unusable and the step's e-mail fallback goes out, once though reported twice; the call is
    skipped, the firm reminder goes by e-mail only; then a payment."""
    loan = make_loan("REPLAY-sms_undelivered", due=today - timedelta(days=1),
                     phone=UNDELIVERED_PHONE, email="replay-sms_undelivered@example.com")
    policy = pinned(loan).model_copy(update={"steps": SMALL_LADDER, "ladder_name": "replay-small"})
    handle = await _start(env, loan, policy)
    await _sleep_to(env, utc_at(today + timedelta(days=1), 10) + timedelta(minutes=30))
    report = DeliveryReport(
        loan_id=loan.loan_id, outbox_key=f"{workflow_id_for(loan.loan_id)}/early-sms/sms",
        step_id="early-sms", channel="sms", status="undelivered", error_code="twilio_30005",
        address_unusable=True, at=await env.get_current_time())
    await handle.signal(CollectionWorkflow.delivery_failed, report)
    await handle.signal(CollectionWorkflow.delivery_failed, report)  # a repeated report
    await handle.signal(CollectionWorkflow.delivery_failed, DeliveryReport(  # not its send
        loan_id=loan.loan_id, outbox_key="collection-OTHER/early-sms/sms", step_id="early-sms",
        channel="sms", status="undelivered", error_code="twilio_30005", address_unusable=True,
        at=report.at))
    await _sleep_to(env, utc_at(today + timedelta(days=5), 12))
    await handle.signal(CollectionWorkflow.pay, PaymentInput("pay-1", cny("1200.00"), "CNY"))
    result = await handle.result()
    assert result.state == CaseState.PAID, result
    timeline = await handle.query(CollectionWorkflow.timeline)
    assert [e.kind for e in timeline].count("delivery_failed") == 2, [e.summary for e in timeline]
    sent = [(e.detail.get("step"), e.detail.get("channel")) for e in timeline
            if e.kind == "contact_sent"]
    assert sent.count(("early-sms", "email")) == 1, sent
    assert ("firm-reminder", "sms") not in sent, sent
    return handle


async def _sleep_to(env: WorkflowEnvironment, instant: datetime) -> None:
    now = await env.get_current_time()
    if instant > now:
        await env.sleep(instant - now)


Scenario = Callable[[WorkflowEnvironment, date, ProviderEmulator, asyncpg.Pool],
                    Awaitable[WorkflowHandle]]
SCENARIOS: dict[str, Scenario] = {
    "paid_in_full": paid_in_full,
    "write_off": write_off,
    "promise_kept": promise_kept,
    "plan_broken": plan_broken,
    "sms_refused": sms_refused,  # recorded from v4 on
    "call_breach": call_breach,  # recorded from v5 on
    "bad_start": bad_start,  # recorded from v5 on
    "agency_placement": agency_placement,  # recorded from v6 on
    "wecom_confirmed": wecom_confirmed,  # recorded from v6 on
    "voice_answered": voice_answered,  # recorded from v6 on
    "sms_opted_out": sms_opted_out,  # recorded from v6 on
    "sms_undelivered": sms_undelivered,  # recorded from v6 on
}


CURRENT = "v9"
# Recorded as -v7 (the vault shape); the others' paths did not change with it.
V7_SCENARIOS = ("paid_in_full", "sms_opted_out", "wecom_confirmed")
# Recorded as -v8 (writes travel with the actions: workflows/carried_writes.py): every scenario.
V8_SCENARIOS = tuple(SCENARIOS)
# Recorded as -v9 (a notice's check travels with its send): every scenario.
V9_SCENARIOS = tuple(SCENARIOS)


async def record(names: list[str], out: Path = HISTORIES, version: str = CURRENT, *,
                 inline: bool = False) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="record-histories-"))
    scratch.chmod(0o755)  # noqa: ASYNC240 - PostgreSQL runs as its own system user when we are root
    os.environ.setdefault("XDG_RUNTIME_DIR", str(scratch / "runtime"))
    pg = EmbeddedPostgres(scratch / "postgres")
    emulator = ProviderEmulator()
    try:
        dsn = pg.start()
        await migrate(dsn)
        pool = await create_pool(dsn)
        url = await emulator.start()
        providers = Providers(twilio_sid="AC" + "0" * 32, twilio_token="record-token",
                              twilio_base_url=url, twilio_from="+15005550006",
                              sendgrid_key="SG.record", sendgrid_base_url=url,
                              sendgrid_from="collections@lender.example", http_timeout_seconds=5,
                              wecom_corp_id=wecom_emulator.CORP_ID,
                              wecom_secret=wecom_emulator.CORP_SECRET, wecom_base_url=url)
        env = await start_test_server(data_converter=data_converter(None))
        keys = parse_keys(generate_key())
        if not inline:
            _VAULT[:] = [Vault(pool, keys)]
        try:
            async with running_worker(env.client, pool, providers, task_queue=TASK_QUEUE,
                                      vault_keys=keys):
                out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any case
                for name in names:
                    # The test server's clock carries over from one scenario to the next.
                    today = today_of(await env.get_current_time())
                    handle = await SCENARIOS[name](env, today, emulator, pool)
                    history = await handle.fetch_history()
                    path = out / f"{name}-{version}.json"
                    path.write_text(history.to_json() + "\n")
                    print(f"{name}: {len(history.events)} events -> {path}")
        finally:
            await env.shutdown()
            await pool.close()
    finally:
        await emulator.stop()
        pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=HISTORIES, help="folder for the JSON files")
    parser.add_argument("--version", default=CURRENT,
                        help="suffix of the files: <name>-<version>.json")
    parser.add_argument("--inline", action="store_true",
                        help="start with the personal fields inline (the shape before v7)")
    args = parser.parse_args()
    names = args.scenarios or list(V9_SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    asyncio.run(record(names, args.out, args.version, inline=args.inline))


if __name__ == "__main__":
    main()
