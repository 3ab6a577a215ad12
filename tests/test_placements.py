"""Issue 19 on the real workflow (time-skipping server, PostgreSQL, the emulator): a case placed
with a collection agency, followed there and taken back, and the report per agency.

The roster is the shipped one (`policies/agencies/roster.toml`): balance bands, `huaxin` below
2000 at 18%, `dongfang` from 2000 (15%, 12% from 3000). The borrower is in Asia/Shanghai.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.agency import (
    AgencyContactInput,
    AgencyReturnInput,
    AgencyRoster,
    PlaceInput,
    PlacementView,
    RecallInput,
)
from contracts.messages import PaymentInput, PaymentStatus, Stage, TaskOutcome
from contracts.names import Query
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from policies.agency_loader import load_roster
from service import agency_report
from tests.helpers import Case, Stack, eventually, new_loan, pinned, start_case, utc_at
from workflows import placement
from workflows.collection_workflow import CollectionWorkflow as WF

PLACEMENT_STEP = Step(id="agency-placement", day=2, hour=10, stage=Stage.LATE, kind="legal",
                      action="agency_placement", template="agency_placement_notice",
                      tone="formal", notice="remedy_notice")
STEPS = [
    Step(id="early-sms", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["sms"],
         template="early_reminder"),
    PLACEMENT_STEP,
    Step(id="after-sms", day=5, hour=10, stage=Stage.LATE, kind="message", channels=["sms"],
         template="late_notice"),
    Step(id="write-off", day=300, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", notice="collection_ending"),
]


@pytest.fixture
def stack(ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool,
          emulator: ProviderEmulator) -> Stack:
    return Stack(ts_env, ts_worker.task_queue, pool, emulator)


async def _open(stack: Stack, loan_id: str, amount: str = "1200.00", interest: str = "150.00",
                fees: str = "50.00", steps: list[Step] | None = None) -> Case:
    loan, now, today = await new_loan(stack, loan_id, 0, 9)
    loan.amount_overdue, loan.interest = Decimal(amount), Decimal(interest)
    loan.fees = Decimal(fees)
    policy = pinned(loan).model_copy(update={"steps": steps or STEPS, "ladder_name": "test"})
    handle = await start_case(stack.env.client, loan, stack.task_queue, policy)
    return Case(stack, loan, handle, now, today)


async def _placement_rows(case: Case) -> list[asyncpg.Record]:
    return await case.pool.fetch("SELECT * FROM placements WHERE loan_id = $1 ORDER BY id",
                                 case.loan.loan_id)


async def _placed(case: Case) -> None:
    await case.sleep_until(utc_at(case.today + timedelta(days=2), 11))
    await eventually(case.status, lambda st: st.placed_with is not None)


# ------------------------------------------------------------------------------ pure decisions


def test_roster_loads_and_balance_band_round_robin_and_region_choose_deterministically() -> None:
    roster = load_roster()
    assert {a.id for a in roster.agencies} >= {"huaxin", "dongfang", "liberty"}
    huaxin = roster.by_id("huaxin")
    assert huaxin is not None and huaxin.rate_for(Stage.LATE, Decimal("900")) == Decimal("0.18")
    assert huaxin.rate_for(Stage.LEGAL, Decimal("900")) == Decimal("0.25")
    dongfang = roster.by_id("dongfang")
    assert dongfang is not None
    assert dongfang.rate_for(Stage.LATE, Decimal("3000")) == Decimal("0.12")
    # Commission: to the cent, half up (222.165 -> 222.17; half-even would give 222.16).
    assert placement.commission_of(Decimal("1234.25"), Decimal("0.18"), "CNY") == Decimal("222.17")
    assert placement.commission_of(Decimal("1234"), Decimal("0.18"), "JPY") == Decimal("222")
    assert placement.commission_of(Decimal("1.005"), Decimal("1"), "BHD") == Decimal("1.005")
    rr = AgencyRoster.model_validate({**roster.model_dump(), "assignment": "round_robin"})
    region = AgencyRoster.model_validate({**roster.model_dump(), "assignment": "region"})
    assert rr.assignment == "round_robin" and region.assignment == "region"


# ------------------------------------------------------------------------- on the real workflow


async def test_placement_step_places_with_the_band_agency_and_the_ladder_pauses_then_resumes(
        stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id)
    await _placed(case)
    st = await case.status()
    assert st.placed_with == "huaxin"  # 1200 CNY: huaxin's band (< 2000)
    assert st.next_action == "paused: placed with agency huaxin"
    texts = await case.wait_messages(2)
    assert "Huaxin Recovery Services" in texts[1], texts  # the notice names the agency
    rows = await eventually(lambda: _placement_rows(case), lambda r: len(r) == 1)
    assert rows[0]["agency_id"] == "huaxin" and rows[0]["commission_rate"] == Decimal("0.18")
    assert rows[0]["amount_at_placement"] == Decimal("1200.00") and rows[0]["ended_at"] is None

    # A payment while placed applies, and counts as recovered; the lender acknowledges nothing.
    result = await case.update(WF.record_payment, PaymentInput("P1", Decimal("100.00"), "CNY"))
    assert result.status == PaymentStatus.APPLIED
    await case.sleep(timedelta(days=10))  # past after-sms (D+5): the ladder is paused
    assert len(case.texts()) == 2, case.texts()
    assert "notice_withheld" in await case.kinds()
    assert "after-sms" not in [r["step_id"] for r in await case.sent()]

    # The term (90 days) expires on its durable timer: the case comes back and its ladder resumes.
    await case.sleep(timedelta(days=85))
    await eventually(case.status, lambda s: s.placed_with is None)
    sent = await case.wait_sent(lambda rows: "after-sms" in [r["step_id"] for r in rows])
    assert [r["step_id"] for r in sent][-1] == "after-sms"
    rows = await eventually(lambda: _placement_rows(case), lambda r: r[0]["ended_at"] is not None)
    assert rows[0]["end_reason"] == "term_expired"
    assert rows[0]["recovered"] == Decimal("100.00") and rows[0]["commission"] == Decimal("18.00")
    assert rows[0]["ended_at"] - rows[0]["placed_at"] >= timedelta(days=90)
    await case.finish()


async def test_full_payment_while_placed_ends_the_placement_with_commission_to_the_cent(
        stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id, amount="1234.25", interest="0", fees="0")
    await _placed(case)
    # The agency collects it in full, and reports it twice: applied once.
    pay = PaymentInput("AG-1", Decimal("1234.25"), "CNY", source="agency:huaxin")
    first = await case.update(WF.record_payment, pay)
    again = await case.update(WF.record_payment, pay)
    assert (first.status, again.status) == (PaymentStatus.APPLIED, PaymentStatus.DUPLICATE)
    await case.handle.result()
    rows = await eventually(lambda: _placement_rows(case), lambda r: r[0]["ended_at"] is not None)
    assert rows[0]["end_reason"] == "paid_in_full"
    assert rows[0]["recovered"] == Decimal("1234.25")
    assert rows[0]["commission"] == Decimal("222.17")  # 1234.25 x 0.18 = 222.165, half up
    assert [p[0] for p in await case.payments()] == ["AG-1"]


async def test_agency_call_outside_the_window_is_a_breach_and_inside_it_is_not(
        stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id)
    await _placed(case)
    day = case.today + timedelta(days=2)
    await case.sleep_until(utc_at(day, 23))
    late = await case.update(WF.agency_contact, AgencyContactInput(
        "huaxin", "call", TaskOutcome.NO_ANSWER, utc_at(day, 22) + timedelta(minutes=15)))
    assert late.breach and late.rule == "cn.cba.quiet_hours_22_08", late
    ok = await case.update(WF.agency_contact, AgencyContactInput(
        "huaxin", "call", TaskOutcome.REACHED, utc_at(day, 10) + timedelta(minutes=30)))
    assert not ok.breach, ok
    other = await case.refused(WF.agency_contact, AgencyContactInput(
        "dongfang", "call", TaskOutcome.REACHED, utc_at(day, 10) + timedelta(minutes=30)))
    assert "not placed with agency dongfang" in other
    rows = await eventually(
        lambda: case.pool.fetch("SELECT decision, rule FROM contacts WHERE loan_id = $1 "
                                "AND step_id = 'agency:huaxin' ORDER BY occurred_at",
                                case.loan.loan_id), lambda r: len(r) == 2)
    assert sorted(r["decision"] for r in rows) == ["breach", "sent"]
    assert (await case.status()).breaches == 1
    view = await case.handle.query(Query.PLACEMENT, result_type=PlacementView)
    assert view.breaches == 1
    await case.finish()


async def test_operator_places_and_recalls_and_an_agency_returns(stack: Stack,
                                                                 loan_id: str) -> None:
    steps = [STEPS[0], STEPS[2], STEPS[3]]  # no placement step: the operator places it
    case = await _open(stack, loan_id, amount="2600.00", steps=steps)
    result = await case.update(WF.place, PlaceInput(actor="ops", reason="hardship review"))
    assert "dongfang" in result.message  # 2600 CNY: dongfang's band
    assert "already placed" in await case.refused(WF.place, PlaceInput(actor="ops"))
    assert "not placed with agency huaxin" in await case.refused(
        WF.agency_return, AgencyReturnInput("huaxin"))
    recalled = await case.update(WF.recall, RecallInput(actor="ops", reason="wrong band"))
    assert "recalled from agency dongfang" in recalled.message
    again = await case.update(WF.place, PlaceInput(actor="ops", agency_id="huaxin"))
    assert "huaxin" in again.message
    back = await case.update(WF.agency_return, AgencyReturnInput("huaxin", "unreachable"))
    assert "returned by agency huaxin" in back.message
    rows = await eventually(lambda: _placement_rows(case),
                            lambda r: len(r) == 2 and r[1]["ended_at"] is not None)
    assert [(r["agency_id"], r["end_reason"]) for r in rows] == [
        ("dongfang", "recalled"), ("huaxin", "returned")]
    assert "case is not placed" in await case.refused(WF.recall, RecallInput(actor="ops"))
    await case.finish()


async def test_report_shows_the_figures_per_agency(stack: Stack, loan_id: str) -> None:
    case = await _open(stack, loan_id, amount="1000.00", interest="0", fees="0")
    await _placed(case)
    await case.update(WF.record_payment, PaymentInput("R1", Decimal("400.00"), "CNY"))
    day = case.today + timedelta(days=2)
    await case.sleep_until(utc_at(day, 23))
    await case.update(WF.agency_contact, AgencyContactInput(
        "huaxin", "call", TaskOutcome.NO_ANSWER, utc_at(day, 22) + timedelta(minutes=15)))
    await case.update(WF.recall, RecallInput(actor="ops"))
    await eventually(lambda: _placement_rows(case), lambda r: r[0]["ended_at"] is not None)
    report = await agency_report.agency_report(case.pool, loan_ids=[case.loan.loan_id])
    [row] = report.agencies
    assert row.agency_id == "huaxin" and row.currency == "CNY"
    assert row.cases_placed == 1 and row.open_placements == 0
    assert row.amount_placed == Decimal("1000.00") and row.recovered == Decimal("400.00")
    assert row.recovery_rate == Decimal("0.4000")
    assert row.commission == Decimal("72.00")
    assert row.breaches == 1
    assert row.average_days_placed == Decimal("0.5")  # placed 10:00, recalled 23:00
    assert agency_report.to_json(report)["agencies"][0]["commission"] == "72.00"
    await case.finish()
