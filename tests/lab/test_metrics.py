"""The lab's figures from case timelines: each figure counted from the events a case records,
money exact, and the bootstrap intervals seeded and paired."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts.messages import CaseResult, CaseState, LoanInput, Stage, TimelineEvent
from lab.intervals import difference, summarise
from lab.metrics import book_figures, case_figures
from lab.prices import load_prices

DUE = date(2026, 1, 10)
PRICES = load_prices()


def loan(loan_id: str, amount: str = "1000.00", currency: str = "CNY") -> LoanInput:
    return LoanInput(loan_id=loan_id, borrower_name="Test Borrower", phone="+8613900000000",
                     email="t@example.com", locale="en", timezone="Asia/Shanghai",
                     currency=currency, amount_overdue=Decimal(amount), due_date=DUE)


def at(day: int, hour: int = 2) -> datetime:
    return datetime(DUE.year, DUE.month, DUE.day, hour, tzinfo=UTC) + timedelta(days=day)


def ev(day: int, kind: str, summary: str = "", **detail: Any) -> TimelineEvent:
    return TimelineEvent(at=at(day), kind=kind, summary=summary, detail=detail)


def cured_case(loan_id: str, *, paid_day: int = 5) -> CaseResult:
    """Reminded before the due date, texted, called, promised, paid in full."""
    return CaseResult(
        loan_id=loan_id, state=CaseState.PAID, stage=Stage.EARLY, outstanding=Decimal("0.00"),
        currency="CNY", paid_total=Decimal("1000.00"), excess=Decimal("0"), close_reason="paid",
        timeline=[
            ev(-3, "contact_sent", "sms sent", step="pre", channel="sms"),
            ev(-3, "contact_sent", "email sent", step="pre", channel="email"),
            ev(1, "stage_changed", "stage pre_due -> early"),
            ev(1, "contact_deferred", "sms deferred: quiet hours", step="e1", channel="sms"),
            ev(2, "contact_sent", "sms sent", step="e1", channel="sms"),
            ev(3, "task_created", "call task created", task_key="k1", step="call"),
            ev(3, "task_outcome", "call outcome: promised", task_key="k1", outcome="promised"),
            ev(3, "promise", "promise to pay 1000.00 CNY by 2026-01-15"),
            ev(paid_day, "payment", "payment p1 of 1000.00 CNY applied; outstanding 0.00"),
            ev(paid_day, "promise_kept", "promise of 1000.00 kept (1000.00 paid)"),
            ev(paid_day, "case_closed", "case closed: paid (paid in full)"),
        ])


def written_off_case(loan_id: str) -> CaseResult:
    """Through every stage to write-off: a missed call task, a visit, a letter, a filing, and a
    call an agent reported outside the window."""
    return CaseResult(
        loan_id=loan_id, state=CaseState.WRITTEN_OFF, stage=Stage.WRITTEN_OFF,
        outstanding=Decimal("1000.00"), currency="CNY", paid_total=Decimal("0.00"),
        excess=Decimal("0"), close_reason="written off",
        timeline=[
            ev(1, "stage_changed", "stage pre_due -> early"),
            ev(2, "contact_sent", "sms sent", channel="sms"),
            ev(3, "task_outcome", "call outcome: deadline_missed", outcome="deadline_missed"),
            ev(7, "stage_changed", "stage early -> middle"),
            ev(8, "task_outcome", "call outcome: no_answer", outcome="no_answer"),
            ev(8, "compliance_breach", "compliance breach (cn.quiet_hours): call at 23:10"),
            ev(30, "stage_changed", "stage middle -> late"),
            ev(35, "task_outcome", "visit outcome: borrower_not_found",
               outcome="borrower_not_found"),
            ev(60, "stage_changed", "stage late -> legal"),
            ev(60, "legal_action", "legal action recorded: lawyer_letter", action="lawyer_letter"),
            ev(90, "legal_action", "legal action recorded: filing", action="filing"),
            ev(180, "stage_changed", "stage legal -> written_off"),
            ev(180, "case_closed", "case closed: written_off"),
        ])


def test_case_figures_count_what_the_timeline_records() -> None:
    f = case_figures(loan("L1"), cured_case("L1"), PRICES["CNY"])
    assert f.cured and f.days_to_cure == 5 and f.recovered == Decimal("1000.00")
    assert f.contacts == {"sms": 2, "email": 1, "call": 1}
    assert (f.promises, f.promises_kept, f.deferrals, f.breaches) == (1, 1, 1, 0)
    assert f.stages == {"pre_due", "early"}
    cny = PRICES["CNY"]
    assert f.cost == 2 * cny.sms + cny.email + cny.agent_minute * cny.agent_minutes_per_call
    assert isinstance(f.cost, Decimal)

    w = case_figures(loan("L2"), written_off_case("L2"), PRICES["CNY"])
    assert not w.cured and w.days_to_cure is None
    # A task nobody worked by its deadline is no contact; a call with no answer is one.
    assert w.contacts == {"sms": 1, "call": 1, "visit": 1}
    assert w.breaches == 1 and w.legal_actions == {"lawyer_letter": 1, "filing": 1}
    assert w.stages == {"pre_due", "early", "middle", "late", "legal", "written_off"}
    assert w.cost == (cny.sms + cny.agent_minute * cny.agent_minutes_per_call + cny.visit
                      + cny.letter + cny.filing)


def figures_of(results: list[tuple[LoanInput, CaseResult]], seed: int = 7) -> dict[str, Any]:
    book = book_figures(results, PRICES)
    return {e.name: e for e in summarise(book, seed=seed, replicates=100)}


def test_book_figures_rates_and_money() -> None:
    pairs = [(loan("A"), cured_case("A", paid_day=4)), (loan("B"), cured_case("B", paid_day=8)),
             (loan("C"), written_off_case("C")), (loan("D", "3000.00"), written_off_case("D"))]
    f = figures_of(pairs)
    assert f["cases"].value == 4
    assert f["cure_rate"].value == 0.5
    assert f["recovered.CNY"].value == Decimal("2000.00")
    assert f["recovery_rate"].value == pytest.approx(2000 / 6000)
    assert f["median_days_to_cure"].value == 4  # the lower of two: a replicate's own definition
    assert f["roll_rate.pre_due->early"].value == 1.0
    assert f["roll_rate.early->middle"].value == 0.5
    assert f["roll_rate.late->legal"].value == 1.0
    assert (f["promises_made"].value, f["promises_kept"].value) == (2, 2)
    assert f["contacts.sms"].value == 6 and f["contacts_per_cure.sms"].value == 3.0
    assert f["breaches"].value == 2 and f["compliance_deferrals"].value == 2
    assert f["legal_actions.filing"].value == 2
    cost = f["cost.CNY"]
    assert isinstance(cost.value, Decimal) and cost.low <= cost.value <= cost.high
    assert f["cost_to_collect"].value == pytest.approx(float(cost.value) / 2000)
    for e in f.values():
        if e.value is not None and e.low is not None:
            assert e.low <= e.value <= e.high, e


def test_intervals_are_seeded_and_a_difference_is_paired() -> None:
    pairs = [(loan(f"L{i}"), cured_case(f"L{i}", paid_day=2 + i % 7) if i % 3 else
              written_off_case(f"L{i}")) for i in range(30)]
    assert figures_of(pairs, seed=3) == figures_of(pairs, seed=3)
    assert figures_of(pairs, seed=3)["cure_rate"] != figures_of(pairs, seed=4)["cure_rate"]
    book = book_figures(pairs, PRICES)
    same = {e.name: e for e in difference(book, book, replicates=50)}
    # The same loans played the same way: no difference, and a paired interval of zero width.
    assert same["cure_rate"].value == same["cure_rate"].low == same["cure_rate"].high == 0
    assert same["cost.CNY"].value == Decimal("0")
    faster = [(loan(f"L{i}"), cured_case(f"L{i}", paid_day=1)) for i in range(30)]
    d = {e.name: e for e in difference(book, book_figures(faster, PRICES), replicates=50)}
    assert d["cure_rate"].value == pytest.approx(10 / 30)
    assert float(d["cure_rate"].low or 0) > 0
    assert float(d["median_days_to_cure"].value or 0) < 0


def test_currencies_are_never_added_together() -> None:
    pairs = [(loan("C1"), cured_case("C1")), (loan("U1", currency="USD"), written_off_case("U1"))]
    f = figures_of(pairs)
    assert f["recovered.CNY"].value == Decimal("1000.00")
    assert f["recovered.USD"].value == Decimal("0.00")
    assert f["recovery_rate"].value == pytest.approx(0.5)  # 100% in CNY, 0% in USD, by cases
    usd = PRICES["USD"]
    assert f["cost.USD"].value == (usd.sms + usd.agent_minute * usd.agent_minutes_per_call
                                   + usd.visit + usd.letter + usd.filing)
