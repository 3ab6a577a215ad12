"""Contact windows, DST, caps and scopes: the pure compliance rules, without Temporal."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.policy import RulePack, Step
from policies.compliance import (
    Attempt,
    CapDecision,
    evaluate_caps,
    local,
    may_contact_after_cease,
    next_allowed,
    step_instant,
    window_check,
)
from policies.loader import load_policies, load_rule_packs

PACKS = load_rule_packs()
CN, US = PACKS["cn"], PACKS["us"]
POLICIES = load_policies(rule_packs=PACKS, templates=None)
SHANGHAI, NEW_YORK, LONDON = "Asia/Shanghai", "America/New_York", "Europe/London"
NIFA = "cn.nifa.connected_calls_per_day"
CBA = "cn.cba.unanswered_per_channel_per_day"
REGF_7_IN_7 = "us.regf.7_calls_in_7_days"
REGF_AFTER_TALK = "us.regf.7_days_after_conversation"
PHONE, EMAIL = "+8613800000000", "li@example.com"


def at(tz: str, y: int, m: int, d: int, h: int, mi: int = 0, fold: int = 0) -> datetime:
    """The UTC instant of a local wall time."""
    return datetime(y, m, d, h, mi, tzinfo=ZoneInfo(tz), fold=fold).astimezone(UTC)


def utc(y: int, m: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


def call(when: datetime, loan: str = "L1", outcome: str = "connected", key: str = PHONE) -> Attempt:
    return Attempt(at=when, channel="call", loan_id=loan, contact_key=key, outcome=outcome)


def sms(when: datetime, loan: str = "L1", key: str = PHONE) -> Attempt:
    return Attempt(at=when, channel="sms", loan_id=loan, contact_key=key, outcome="sent")


def caps(pack: RulePack, attempts, *, when, channel="call", tz=SHANGHAI, loan="L1", key=PHONE):
    return evaluate_caps(
        pack, channel=channel, at=when, tz=tz, loan_id=loan, contact_key=key, attempts=attempts
    )


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "expected"),
    [(7, 59, "cn.cba.quiet_hours_22_08"), (8, 0, None), (21, 59, None),
     (22, 0, "cn.cba.quiet_hours_22_08"), (3, 0, "cn.cba.quiet_hours_22_08")],
)
def test_cn_window_edges(hour, minute, expected):
    assert window_check(at(SHANGHAI, 2026, 11, 5, hour, minute), SHANGHAI, CN) == expected


@pytest.mark.parametrize(
    ("hour", "minute", "expected"),
    [(7, 59, "us.regf.inconvenient_time_8_21"), (8, 0, None), (20, 59, None),
     (21, 0, "us.regf.inconvenient_time_8_21")],
)
def test_us_window_edges(hour, minute, expected):
    assert window_check(at(NEW_YORK, 2026, 11, 5, hour, minute), NEW_YORK, US) == expected


def test_window_is_the_borrowers_local_time():
    # 13:00 UTC is 21:00 in Shanghai (open) and 08:00 in New York (open) but 05:00 in Los Angeles.
    instant = utc(2026, 11, 5, 13)
    assert window_check(instant, SHANGHAI, CN) is None
    assert window_check(instant, NEW_YORK, US) is None
    assert window_check(instant, "America/Los_Angeles", US) == US.window_rule
    assert local(instant, SHANGHAI).hour == 21


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        window_check(datetime(2026, 11, 5, 10), SHANGHAI, CN)


def test_next_allowed_inside_and_outside_the_window():
    inside = at(SHANGHAI, 2026, 11, 5, 10)
    assert next_allowed(inside, SHANGHAI, CN) == (inside, None)
    early = at(SHANGHAI, 2026, 11, 5, 6, 30)
    assert next_allowed(early, SHANGHAI, CN) == (at(SHANGHAI, 2026, 11, 5, 8), CN.window_rule)
    late = at(SHANGHAI, 2026, 11, 5, 22)
    assert next_allowed(late, SHANGHAI, CN) == (at(SHANGHAI, 2026, 11, 6, 8), CN.window_rule)


@pytest.mark.parametrize(
    ("tz", "pack", "planned", "expected"),
    [
        # New York springs forward on 2026-03-08: 21:30 EST is 02:30 UTC, 08:00 EDT is 12:00 UTC.
        (NEW_YORK, US, utc(2026, 3, 8, 2, 30), utc(2026, 3, 8, 12)),
        # ... and falls back on 2026-11-01: 21:30 EDT is 01:30 UTC, 08:00 EST is 13:00 UTC.
        (NEW_YORK, US, utc(2026, 11, 1, 1, 30), utc(2026, 11, 1, 13)),
        # In the early hours of the change day itself (01:30 EST, before the gap).
        (NEW_YORK, US, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 12)),
        # London: BST starts 2026-03-29 (22:30 GMT -> 08:00 BST = 07:00 UTC) ...
        (LONDON, CN, utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 7)),
        # ... and ends 2026-10-25 (22:30 BST = 21:30 UTC -> 08:00 GMT = 08:00 UTC).
        (LONDON, CN, utc(2026, 10, 24, 21, 30), utc(2026, 10, 25, 8)),
    ],
)
def test_next_allowed_across_dst(tz, pack, planned, expected):
    assert window_check(planned, tz, pack) == pack.window_rule
    instant, rule = next_allowed(planned, tz, pack)
    assert (instant, rule) == (expected, pack.window_rule)
    assert local(instant, tz).hour == 8 and local(instant, tz).minute == 0


def test_quiet_weekdays_and_dates():
    pack = RulePack.model_validate(
        CN.model_dump() | {"quiet_weekdays": [6], "quiet_dates": ["2026-10-01"]}
    )
    sunday = at(SHANGHAI, 2026, 11, 8, 10)
    assert window_check(sunday, SHANGHAI, pack) == "cn.quiet_weekday"
    assert window_check(at(SHANGHAI, 2026, 10, 1, 10), SHANGHAI, pack) == "cn.quiet_date"
    saturday_night = at(SHANGHAI, 2026, 11, 7, 22, 30)
    assert next_allowed(saturday_night, SHANGHAI, pack) == (
        at(SHANGHAI, 2026, 11, 9, 8), CN.window_rule
    )
    monday = at(SHANGHAI, 2026, 11, 9, 8)
    assert next_allowed(sunday, SHANGHAI, pack) == (monday, "cn.quiet_weekday")
    eve = at(SHANGHAI, 2026, 9, 30, 22, 30)
    assert next_allowed(eve, SHANGHAI, pack)[0] == at(SHANGHAI, 2026, 10, 2, 8)
    with pytest.raises(ValueError, match="every weekday"):
        RulePack.model_validate(CN.model_dump() | {"quiet_weekdays": list(range(7))})


# --- step instants ------------------------------------------------------------------------------


def test_step_instant_plain():
    assert step_instant(date(2026, 11, 1), -3, 10, SHANGHAI) == utc(2026, 10, 29, 2)
    assert step_instant(date(2026, 11, 1), 180, 10, SHANGHAI) == utc(2027, 4, 30, 2)


def test_step_instant_in_a_dst_gap_takes_the_first_instant_after_it():
    # 02:00-03:00 does not exist in New York on 2026-03-08: 02:00 becomes 03:00 EDT (07:00 UTC).
    assert step_instant(date(2026, 3, 1), 7, 2, NEW_YORK) == utc(2026, 3, 8, 7)
    # London skips 01:00-02:00 on 2026-03-29: 01:00 becomes 02:00 BST (01:00 UTC).
    assert step_instant(date(2026, 3, 29), 0, 1, LONDON) == utc(2026, 3, 29, 1)
    # Lord Howe Island moves by 30 minutes: 02:00 becomes 02:30 (+11:00) on 2026-10-04.
    instant = step_instant(date(2026, 10, 4), 0, 2, "Australia/Lord_Howe")
    assert local(instant, "Australia/Lord_Howe").strftime("%H:%M %z") == "02:30 +1100"
    assert local(instant - timedelta(seconds=1), "Australia/Lord_Howe").strftime("%H:%M:%S") == (
        "01:59:59"
    )


def test_step_instant_in_a_fold_takes_the_first_occurrence():
    assert step_instant(date(2026, 10, 25), 7, 1, NEW_YORK) == utc(2026, 11, 1, 5)  # 01:00 EDT


# --- caps: NIFA, 3 connected calls per borrower per day -----------------------------------------


def test_nifa_counts_connected_calls_across_loans():
    day = (2026, 11, 5)
    history = [
        call(at(SHANGHAI, *day, 9), loan="L1"),
        call(at(SHANGHAI, *day, 9, 30), loan="L1", outcome="unanswered"),
        sms(at(SHANGHAI, *day, 9, 45), loan="L2"),
        call(at(SHANGHAI, *day, 10), loan="L2"),
        call(at(SHANGHAI, 2026, 11, 4, 21), loan="L2"),  # yesterday: not counted
    ]
    third = caps(CN, history, when=at(SHANGHAI, *day, 12), loan="L2")
    assert third == CapDecision(True, None, None, "within caps")
    history.append(call(at(SHANGHAI, *day, 12), loan="L1"))
    fourth = caps(CN, history, when=at(SHANGHAI, *day, 13), loan="L2", key="+8613900000000")
    assert (fourth.allowed, fourth.rule) == (False, NIFA)
    assert fourth.retry_at == at(SHANGHAI, 2026, 11, 6, 8)
    assert fourth.reason == f"{NIFA}: 3 of 3 connected calls today"
    # SMS is not a call: the NIFA cap does not apply.
    assert caps(CN, history, when=at(SHANGHAI, *day, 13), channel="sms").allowed


def test_nifa_day_is_the_borrowers_local_day():
    la = "America/Los_Angeles"  # 17:00 PST on 2026-11-05 is 01:00 UTC on 2026-11-06
    history = [call(at(la, 2026, 11, 5, h)) for h in (8, 9, 10)]
    decision = caps(CN, history, when=at(la, 2026, 11, 5, 17), tz=la)
    assert (decision.rule, decision.retry_at) == (NIFA, at(la, 2026, 11, 6, 8))
    assert caps(CN, history, when=at(la, 2026, 11, 6, 8), tz=la).allowed


def test_a_pending_call_may_still_connect():
    day = (2026, 11, 5)
    history = [call(at(SHANGHAI, *day, 9)), call(at(SHANGHAI, *day, 10)),
               call(at(SHANGHAI, *day, 11), outcome="pending")]
    decision = caps(CN, history, when=at(SHANGHAI, *day, 12))
    assert decision.rule == NIFA and decision.reason.endswith("(1 still pending)")


# --- caps: CBA, 6 unanswered attempts per contact per channel per day ---------------------------


def test_cba_counts_unanswered_attempts_per_contact_and_channel():
    day = (2026, 11, 5)
    five = [sms(at(SHANGHAI, *day, 9 + i), loan=f"L{i % 2}") for i in range(5)]
    assert caps(CN, five, when=at(SHANGHAI, *day, 15), channel="sms").allowed  # the 6th
    six = [*five, sms(at(SHANGHAI, *day, 15))]
    refused = caps(CN, six, when=at(SHANGHAI, *day, 16), channel="sms")
    assert (refused.allowed, refused.rule) == (False, CBA)
    assert refused.retry_at == at(SHANGHAI, 2026, 11, 6, 8)
    assert refused.reason == f"{CBA}: 6 of 6 unanswered sms attempts today"
    # Another number, another channel: separate counts.
    assert caps(CN, six, when=at(SHANGHAI, *day, 16), channel="sms", key="+8613900000000").allowed
    assert caps(CN, six, when=at(SHANGHAI, *day, 16), channel="email", key=EMAIL).allowed
    assert caps(CN, six, when=at(SHANGHAI, *day, 16), channel="call").allowed


def test_cba_unanswered_calls_and_pending_ones():
    day = (2026, 11, 5)
    calls = [call(at(SHANGHAI, *day, 9 + i), outcome="unanswered") for i in range(5)]
    calls.append(call(at(SHANGHAI, *day, 14), outcome="pending"))
    calls.append(call(at(SHANGHAI, *day, 14, 30), outcome="connected"))  # answered: not counted
    decision = caps(CN, calls, when=at(SHANGHAI, *day, 15))
    assert decision.rule == CBA and decision.reason == f"{CBA}: 6 of 6 unanswered calls today"


# --- caps: Regulation F -------------------------------------------------------------------------


def regf_calls(loan: str = "L1") -> list[Attempt]:
    return [
        call(at(NEW_YORK, 2026, 11, d, h), loan=loan, outcome="unanswered")
        for d in (10, 11, 12, 13) for h in (10, 15)
    ][:7]


def test_regf_7_calls_in_7_days_per_debt():
    calls = regf_calls()
    assert caps(US, calls[1:], when=at(NEW_YORK, 2026, 11, 13, 15), tz=NEW_YORK).allowed  # 7th
    refused = caps(US, calls, when=at(NEW_YORK, 2026, 11, 13, 15), tz=NEW_YORK)
    assert (refused.allowed, refused.rule) == (False, REGF_7_IN_7)
    # The oldest call (11-10 10:00) leaves the rolling window 7 days later.
    assert refused.retry_at == at(NEW_YORK, 2026, 11, 17, 10)
    assert refused.reason == f"{REGF_7_IN_7}: 7 of 7 calls in 7 days"
    assert caps(US, calls, when=at(NEW_YORK, 2026, 11, 17, 10), tz=NEW_YORK).allowed
    assert not caps(US, calls, when=at(NEW_YORK, 2026, 11, 17, 9, 59), tz=NEW_YORK).allowed
    # Another debt of the same consumer has its own count.
    assert caps(US, calls, when=at(NEW_YORK, 2026, 11, 13, 15), tz=NEW_YORK, loan="L2").allowed


def test_regf_no_call_within_7_days_after_a_conversation():
    talk = call(at(NEW_YORK, 2026, 11, 10, 10), outcome="connected")
    refused = caps(US, [talk], when=at(NEW_YORK, 2026, 11, 12, 10), tz=NEW_YORK)
    assert (refused.allowed, refused.rule) == (False, REGF_AFTER_TALK)
    assert refused.retry_at == at(NEW_YORK, 2026, 11, 17, 10)
    assert refused.reason.startswith(f"{REGF_AFTER_TALK}: conversation on this debt")
    assert caps(US, [talk], when=at(NEW_YORK, 2026, 11, 17, 10), tz=NEW_YORK).allowed
    assert caps(US, [talk], when=at(NEW_YORK, 2026, 11, 12, 10), tz=NEW_YORK, loan="L2").allowed
    assert caps(US, [talk], when=at(NEW_YORK, 2026, 11, 12, 10), tz=NEW_YORK, channel="sms").allowed


def test_regf_retry_is_pushed_into_the_window_across_dst():
    # 20:50 EST on 2026-03-02; seven days later is 21:50 EDT (after the change): outside the
    # window, so the retry is 08:00 EDT on 2026-03-10.
    talk = call(at(NEW_YORK, 2026, 3, 2, 20, 50), outcome="connected")
    refused = caps(US, [talk], when=at(NEW_YORK, 2026, 3, 5, 10), tz=NEW_YORK)
    assert refused.retry_at == utc(2026, 3, 10, 12)


def test_the_longest_deferral_wins():
    calls = [*regf_calls()[:6], call(at(NEW_YORK, 2026, 11, 13, 10), outcome="connected")]
    decision = caps(US, calls, when=at(NEW_YORK, 2026, 11, 13, 15), tz=NEW_YORK)
    assert decision.rule == REGF_AFTER_TALK and decision.retry_at == at(NEW_YORK, 2026, 11, 20, 10)


def test_cease():
    assert may_contact_after_cease(US, "collection_ending")
    assert may_contact_after_cease(US, "remedy_notice")
    assert not may_contact_after_cease(US, None)
    narrow = RulePack.model_validate(
        US.model_dump() | {"allowed_after_cease": ["collection_ending"]}
    )
    assert not may_contact_after_cease(narrow, "remedy_notice")


# --- property: a ladder walked as workflows would never breaks a rule ---------------------------

_COUNTED = {
    "attempts": {"sent", "pending", "connected", "unanswered"},
    "connected": {"connected"},
    "unanswered": {"sent", "pending", "unanswered"},
}


def _channels(step: Step) -> list[str]:
    if step.kind == "message":
        return list(step.channels)
    return {"call": ["call"], "visit": ["visit"]}.get(step.kind, ["email"])


def _applies(step: Step, balance: Decimal) -> bool:
    low, high = step.min_outstanding, step.max_outstanding
    return (low is None or balance >= low) and (high is None or balance < high)


def walk(pack, steps, tz, loans, start, rnd) -> list[Attempt]:
    """One borrower's loans, each a workflow walking the ladder; the earliest action goes first."""
    for loan in loans:
        loan["todo"] = [
            (s, ch) for s in steps if _applies(s, loan["balance"]) for ch in _channels(s)
        ]
        loan["now"] = start
    attempts: list[Attempt] = []

    def planned(loan):
        step = loan["todo"][0][0]
        return max(step_instant(loan["due"], step.day, step.hour, tz), loan["now"])

    for _ in range(20_000):
        waiting = [loan for loan in loans if loan["todo"]]
        if not waiting:
            return attempts
        loan = min(waiting, key=planned)
        (_step, channel), instant = loan["todo"][0], planned(loan)
        allowed_at, rule = next_allowed(instant, tz, pack)
        assert allowed_at >= instant
        if allowed_at != instant:  # another workflow may act before this one wakes up
            assert rule is not None
            loan["now"] = allowed_at
            continue
        key = loan["email"] if channel == "email" else loan["phone"]
        decision = evaluate_caps(pack, channel=channel, at=instant, tz=tz, loan_id=loan["id"],
                                 contact_key=key, attempts=attempts)
        if not decision.allowed:
            assert decision.rule and decision.retry_at > instant
            loan["now"] = decision.retry_at
            continue
        if channel == "call":
            outcome = rnd.choice(["connected", "unanswered", "pending"])
        elif channel == "visit":
            outcome = rnd.choice(["connected", "unanswered"])
        else:
            outcome = "sent"
        attempts.append(Attempt(instant, channel, loan["id"], key, outcome))
        loan["now"] = instant
        loan["todo"].pop(0)
    raise AssertionError("the walk did not finish")


def assert_within_rules(pack: RulePack, tz: str, attempts: list[Attempt]) -> None:
    zone = ZoneInfo(tz)
    assert [a.at for a in attempts] == sorted(a.at for a in attempts)
    for a in attempts:
        assert window_check(a.at, tz, pack) is None, (a, local(a.at, tz))
    for cap in pack.caps:
        for i, a in enumerate(attempts):
            if a.channel not in cap.channels:
                continue
            peers = [
                b for b in attempts[: i + 1]
                if (cap.scope != "contact" or b.contact_key == a.contact_key)
                and (cap.scope != "debt" or b.loan_id == a.loan_id)
                and (b.channel == a.channel if cap.per_channel else b.channel in cap.channels)
                and b.outcome in _COUNTED[cap.counts]
                and (
                    b.at.astimezone(zone).date() == a.at.astimezone(zone).date()
                    if cap.period_days == 1
                    else b.at > a.at - timedelta(days=cap.period_days)
                )
            ]
            assert len(peers) <= cap.limit, (cap.id, a, peers)
    quiet = timedelta(days=pack.post_conversation_quiet_days)
    for i, c in enumerate(attempts):
        if c.channel != "call" or not quiet:
            continue
        for b in attempts[:i]:
            talked = b.loan_id == c.loan_id and b.outcome == "connected"
            assert not (talked and b.at <= c.at < b.at + quiet), (pack.post_conversation_rule, b, c)


ZONES = sorted(available_timezones())
loan_shapes = st.lists(
    st.tuples(
        st.integers(0, 10),  # due date offset from the first loan
        st.booleans(),  # shares the phone number with the first loan
        st.booleans(),  # shares the e-mail address
        st.sampled_from([Decimal(300), Decimal(2000), Decimal(8000)]),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["default", "us_default"]),
    tz=st.sampled_from(ZONES),
    due=st.dates(date(2025, 1, 1), date(2028, 12, 31)),
    start_minutes=st.integers(-5 * 1440, 200 * 1440),
    shapes=loan_shapes,
    rnd=st.randoms(use_true_random=False),
)
def test_walking_the_ladder_never_breaks_a_rule(policy, tz, due, start_minutes, shapes, rnd):
    file, _ = POLICIES[policy]
    pack, steps = PACKS[file.rule_pack], file.ladders["standard"]
    loans = [
        {
            "id": f"L{i}",
            "due": due + timedelta(days=offset),
            "phone": "+100" if shared_phone or i == 0 else f"+10{i}",
            "email": "a@x" if shared_email or i == 0 else f"{i}@x",
            "balance": balance,
        }
        for i, (offset, shared_phone, shared_email, balance) in enumerate(shapes)
    ]
    start = step_instant(due, 0, 0, tz) + timedelta(minutes=start_minutes)
    attempts = walk(pack, steps, tz, loans, start, rnd)
    expected = sum(
        len(_channels(s)) for loan in loans for s in steps if _applies(s, loan["balance"])
    )
    assert len(attempts) == expected
    assert all(a.at >= start for a in attempts)
    assert_within_rules(pack, tz, attempts)


def test_the_walk_does_hit_the_caps():
    """The property test is not vacuous: a late start on three loans fires many steps at once."""
    file, _ = POLICIES["default"]
    loans = [
        {"id": f"L{i}", "due": date(2026, 3, 1), "phone": "+100", "email": "a@x",
         "balance": Decimal(8000)}
        for i in range(3)
    ]
    start = at(SHANGHAI, 2026, 5, 1, 9)
    attempts = walk(CN, file.ladders["standard"], SHANGHAI, loans, start, random.Random(7))
    first_day = [a for a in attempts if local(a.at, SHANGHAI).date() == date(2026, 5, 1)]
    assert len([a for a in first_day if a.channel == "sms"]) == 6
    assert len(attempts) > len(first_day)
    assert_within_rules(CN, SHANGHAI, attempts)
