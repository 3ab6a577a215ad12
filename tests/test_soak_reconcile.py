"""The soak reconciler's checks (`bench/soak/reconcile/`) on small hand-made inputs: each finds
what it is there to find, and finds nothing in a clean picture."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from bench.soak.reconcile import (
    Cap,
    CaseRow,
    ContactRow,
    Loan,
    OutboxRow,
    PaymentRow,
    ProviderMessage,
    ReportedPayment,
    RulePack,
    UnappliedRow,
    WorkflowFact,
    body_hash,
    check_cases,
    check_compliance,
    check_messages,
    check_payments,
    load_rule_packs,
)

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
CN = RulePack("cn", time(8), time(22), "cn.quiet_hours", caps=(
    Cap("cn.connected_calls", frozenset({"call"}), "connected", "borrower", 3, 1),
    Cap("cn.unanswered", frozenset({"sms", "email", "call"}), "unanswered", "contact", 6, 1,
        per_channel=True),
))
LOAN = Loan("L1", "Asia/Shanghai", "CNY", Decimal("1200.00"))
CASE = CaseRow("L1", "paid", "early", "CNY", Decimal("1200.00"), Decimal("0.00"),
               Decimal("1200.00"), "cn", T0)
KEY = "collection-L1/early-sms/sms"


def sms(ident: str, body: str = "pay now", at: datetime = T0) -> ProviderMessage:
    return ProviderMessage("sms", ident, "+8613800000001", body, None, at)


def outbox(key: str = KEY, sid: str = "SM1", body: str = "pay now") -> OutboxRow:
    return OutboxRow(key, "sms", "sent", sid, body_hash("+8613800000001", body), T0)


def contact(key: str = KEY, *, channel: str = "sms", at: datetime = T0,
            outcome: str = "sent", step: str = "early-sms", decision: str = "sent") -> ContactRow:
    return ContactRow(key, "L1", "B1", "p:1", channel, step, decision, outcome, "cn.window",
                      at, "delivered")


def test_one_message_per_send_is_clean() -> None:
    f = check_messages([sms("SM1")], [outbox()], [contact()])
    assert (f.duplicates, f.losses, f.unexplained) == ([], [], [])
    assert f.sent["sms"] == f.delivered["sms"] == 1


def test_a_second_copy_of_a_message_is_a_duplicate() -> None:
    # The worker died after the provider took the message; the retry sent it again.
    f = check_messages([sms("SM1"), sms("SM2")], [outbox()], [contact()])
    assert f.duplicates == [f"{KEY}: 2 provider messages"]
    assert f.losses == []


def test_an_email_sent_twice_under_one_key_is_a_duplicate() -> None:
    key = "collection-L1/early-email/email"
    mail = [ProviderMessage("email", f"m{i}", "a@example.com", "x", key, T0) for i in (1, 2)]
    row = OutboxRow(key, "email", "sent", "m1", "h", T0)
    f = check_messages(mail, [row], [contact(key, channel="email")])
    assert f.duplicates == [f"{key}: 2 provider messages"]


def test_a_send_marked_sent_that_the_provider_never_got_is_a_loss() -> None:
    f = check_messages([], [outbox()], [contact()])
    assert len(f.losses) == 1 and "the provider has no such message" in f.losses[0]


def test_a_contact_recorded_as_sent_without_a_send_is_a_loss() -> None:
    f = check_messages([], [], [contact()])
    assert f.losses == [f"{KEY}: contact recorded as sent, outbox missing"]


def test_a_send_left_claimed_on_an_ended_case_is_stuck() -> None:
    row = OutboxRow(KEY, "sms", "sending", None, "h", T0)
    assert check_messages([], [row], [], ended={"L1"}).stuck_sends
    assert not check_messages([], [row], [], ended=set()).stuck_sends  # still running


def test_amounts_conserved_to_the_cent() -> None:
    reported = [ReportedPayment("L1", "P1", Decimal("400.00"), "CNY", "applied"),
                ReportedPayment("L1", "P1", Decimal("400.00"), "CNY", "duplicate"),
                ReportedPayment("L1", "P2", Decimal("800.01"), "CNY", "applied"),
                ReportedPayment("L1", "W1", Decimal("5.00"), "USD", "unapplied")]
    applied = [PaymentRow("L1", "P1", Decimal("400.00"), "CNY",
                          {"fees": "25.00", "principal": "375.00"}),
               PaymentRow("L1", "P2", Decimal("800.01"), "CNY",
                          {"principal": "800.00", "excess": "0.01"})]
    unapplied = [UnappliedRow("L1", "W1", Decimal("5.00"), "USD", "unapplied")]
    f = check_payments(reported, applied, unapplied, [CASE])
    assert f.conserved, (f.lost, f.mismatched, f.unbalanced)
    assert (f.reported, f.repeats, f.applied, f.unapplied) == (3, 1, 2, 1)
    assert f.reported_amount == {"CNY": Decimal("1200.01"), "USD": Decimal("5.00")}
    assert f.excess_amount["CNY"] == Decimal("0.01")


def test_a_reported_payment_nowhere_recorded_is_lost() -> None:
    reported = [ReportedPayment("L1", "P1", Decimal("1200.00"), "CNY", "applied")]
    f = check_payments(reported, [], [], [])
    assert not f.conserved
    assert f.lost == ["L1 payment P1 of 1200.00 CNY: neither applied nor unapplied "
                      "(answer applied)"]


def test_a_cent_off_is_not_conserved() -> None:
    reported = [ReportedPayment("L1", "P1", Decimal("1200.00"), "CNY", "applied")]
    applied = [PaymentRow("L1", "P1", Decimal("1200.00"), "CNY", {"principal": "1200.00"})]
    off = CaseRow(**{**CASE.__dict__, "outstanding": Decimal("0.01")})
    f = check_payments(reported, applied, [], [off])
    assert not f.conserved and "outstanding 0.01" in f.unbalanced[0]
    # Temporal's search attribute disagreeing with PostgreSQL is caught too.
    wf = WorkflowFact("collection-L1", "completed", "paid", 3, 10, 10)
    assert any("Temporal" in x for x in check_payments(reported, applied, [], [CASE],
                                                       [wf]).unbalanced)


def test_a_payment_refused_as_closed_is_not_a_loss() -> None:
    reported = [ReportedPayment("L1", "L9", Decimal("100.00"), "CNY", "closed")]
    f = check_payments(reported, [], [], [])
    assert f.conserved and len(f.refused) == 1


def test_a_payment_kept_unapplied_after_the_case_ended_is_counted() -> None:
    reported = [ReportedPayment("L1", "L9", Decimal("100.00"), "CNY", "422")]
    kept = [UnappliedRow("L1", "L9", Decimal("100.00"), "CNY", "unapplied",
                         "case closed (written_off)")]
    f = check_payments(reported, [], kept, [])
    assert f.conserved and not f.refused
    assert (f.unapplied, f.unapplied_closed) == (1, 1)
    assert f.unapplied_amount == {"CNY": Decimal("100.00")}


def test_a_running_case_whose_history_does_not_grow_is_stuck() -> None:
    stuck = WorkflowFact("collection-L1", "running", "active", 1200, 40, 40,
                         pending="send_sms attempt 9")
    f = check_cases([LOAN], [stuck], [])
    assert len(f.stuck) == 1 and "history not growing" in f.stuck[0]
    moving = WorkflowFact("collection-L1", "running", "active", 1200, 40, 44)
    assert check_cases([LOAN], [moving], []).stuck == []


def test_a_started_case_missing_from_temporal_and_a_disagreement_are_found() -> None:
    assert check_cases([LOAN], [], []).stuck == ["L1: started, but Temporal has no workflow"]
    done = WorkflowFact("collection-L1", "completed", "paid", 0, 50, 50)
    active = CaseRow(**{**CASE.__dict__, "state": "active"})
    assert check_cases([LOAN], [done], [active]).disagree == ["L1: Temporal paid, "
                                                             "PostgreSQL active"]
    assert not check_cases([LOAN], [done], [CASE]).stuck


def test_a_contact_outside_the_window_is_a_breach() -> None:
    late = T0 + timedelta(hours=13)  # 23:00 in Shanghai
    f = check_compliance([contact(at=late)], [LOAN], [CASE], {"cn": CN},
                         decided_steps=frozenset({"early-sms"}))
    assert f.outside_window == ["L1: sms early-sms at 23:00 local (Asia/Shanghai), window "
                                "08:00-22:00"]
    assert f.breaches == 1
    # At 21:59 it is inside; at 22:00 sharp the window is already closed.
    edge = T0 + timedelta(hours=11, minutes=59)
    assert check_compliance([contact(at=edge)], [LOAN], [CASE], {"cn": CN}).breaches == 0
    closed = T0 + timedelta(hours=12)
    assert check_compliance([contact(at=closed)], [LOAN], [CASE], {"cn": CN}).breaches == 1


def test_a_fourth_connected_call_in_a_day_is_over_the_cap() -> None:
    calls = [contact(f"collection-L1/call-{i}", channel="call", step=f"call-{i}",
                     outcome="connected", at=T0 + timedelta(hours=i)) for i in range(4)]
    f = check_compliance(calls, [LOAN], [CASE], {"cn": CN})
    assert len(f.over_cap) == 1 and "cn.connected_calls: 4 > 3" in f.over_cap[0]
    assert check_compliance(calls[:3], [LOAN], [CASE], {"cn": CN}).breaches == 0


def test_a_message_that_reached_the_provider_after_the_window_closed_is_a_breach() -> None:
    # Decided at 21:59:50 local on a real clock, retried for a minute: it arrived at 22:00:50.
    decided = T0 + timedelta(hours=11, minutes=59, seconds=50)
    got = [sms("SM1", at=decided + timedelta(seconds=60))]
    f = check_compliance([contact(at=decided)], [LOAN], [CASE], {"cn": CN}, got, [outbox()])
    assert len(f.late_at_provider) == 1
    assert f.provider_lag_seconds == [60.0]


def test_the_rule_packs_are_read_from_their_files() -> None:
    packs = load_rule_packs()
    assert packs["cn"].window_start == time(8) and packs["cn"].window_end == time(22)
    assert packs["us"].window_end == time(21) and packs["us"].post_conversation_quiet_days == 7
    assert {c.id for c in packs["cn"].caps} >= {"cn.nifa.connected_calls_per_day"}


def test_a_send_withheld_because_the_window_closed_is_listed_not_stuck() -> None:
    row = OutboxRow(KEY, "sms", "failed", None, "h", T0, "outside_window")
    f = check_messages([], [row], [], ended={"L1"})
    assert len(f.withheld) == 1 and not (f.stuck_sends or f.losses)
