"""Policy and rule-pack files: the shipped ones load, broken ones fail with a useful message."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts.messages import LoanInput, Stage
from contracts.policy import select_segment
from policies.loader import (
    POLICIES_DIR,
    RULES_DIR,
    PolicyError,
    load_policies,
    load_policy,
    load_rule_pack,
    load_rule_packs,
    parse_policy,
    resolve_policy,
    validate_files,
)

BROKEN = Path(__file__).parent / "data" / "policies"

# The template catalogue (names and channels are fixed; the templates live in activities/).
TEMPLATES: dict[str, frozenset[str]] = {
    "pre_due_reminder": frozenset({"sms", "email"}),
    "early_reminder": frozenset({"sms", "email"}),
    "firm_reminder": frozenset({"sms", "email"}),
    "formal_notice": frozenset({"email"}),
    "late_notice": frozenset({"sms", "email"}),
    "agency_placement_notice": frozenset({"sms", "email"}),
    "lawyer_letter": frozenset({"email"}),
    "litigation_notice": frozenset({"email"}),
    "write_off_notice": frozenset({"email"}),
    "payment_receipt": frozenset({"sms", "email"}),
    "payment_ack": frozenset({"sms"}),
    "settlement_receipt": frozenset({"sms", "email"}),
    "promise_confirmation": frozenset({"sms"}),
    "installment_reminder": frozenset({"sms", "email"}),
    "validation_notice": frozenset({"email"}),
}


@pytest.fixture(scope="module")
def packs():
    return load_rule_packs()


@pytest.fixture(scope="module")
def policies(packs):
    return load_policies(rule_packs=packs, templates=TEMPLATES)


def loan(**overrides: Any) -> LoanInput:
    fields: dict[str, Any] = dict(
        loan_id="L-1", borrower_name="Li Lei", phone="+8613800000000", email="li@example.com",
        locale="zh-CN", timezone="Asia/Shanghai", currency="CNY",
        amount_overdue=Decimal("8000.00"), due_date=date(2026, 11, 1),
    )
    return LoanInput(**(fields | overrides))


# --- shipped files ------------------------------------------------------------------------------


def test_rule_packs_load(packs):
    assert set(packs) == {"cn", "us"}
    cn, us = packs["cn"], packs["us"]
    assert (cn.window_start, cn.window_end, cn.window_rule) == (
        time(8), time(22), "cn.cba.quiet_hours_22_08"
    )
    caps = {c.id: c for c in cn.caps}
    nifa = caps["cn.nifa.connected_calls_per_day"]
    assert (nifa.channels, nifa.counts, nifa.scope, nifa.limit, nifa.period_days) == (
        ["call", "voice"], "connected", "borrower", 3, 1
    )
    cba = caps["cn.cba.unanswered_per_channel_per_day"]
    assert (cba.per_channel, cba.counts, cba.scope, cba.limit) == (True, "unanswered", "contact", 6)
    assert not cn.opt_out_required and not cn.validation_notice and cn.sources
    assert (us.window_end, us.window_rule) == (time(21), "us.regf.inconvenient_time_8_21")
    (regf,) = us.caps
    assert (regf.id, regf.scope, regf.limit, regf.period_days, regf.counts) == (
        "us.regf.7_calls_in_7_days", "debt", 7, 7, "attempts"
    )
    assert us.post_conversation_quiet_days == 7
    assert us.post_conversation_rule == "us.regf.7_days_after_conversation"
    assert us.opt_out_required and us.validation_notice
    assert us.allowed_after_cease == ["collection_ending", "remedy_notice"]


def test_shipped_policies_validate(policies):
    assert set(policies) == {"default", "us_default", "demo"}
    assert validate_files(sorted(POLICIES_DIR.glob("*.toml")), templates=TEMPLATES) == []
    assert validate_files(sorted(RULES_DIR.glob("*.toml")), templates=TEMPLATES) == []
    for policy, digest in policies.values():
        assert len(digest) == 64
        for name, steps in policy.ladders.items():
            assert steps[-1].kind == "write_off", name
            assert steps[-1].notice == "collection_ending"
            assert [s.day for s in steps] == sorted(s.day for s in steps)
            assert len({s.id for s in steps}) == len(steps)
            assert all(9 <= s.hour <= 19 for s in steps)
            for step in steps:
                if step.kind == "legal":
                    assert step.notice == "remedy_notice", (name, step.id)


def test_default_ladders(policies):
    default, _ = policies["default"]
    assert default.rule_pack == "cn"
    standard = default.ladders["standard"]
    assert [s.day for s in standard] == [
        -3, 1, 3, 4, 7, 8, 11, 14, 18, 24, 30, 35, 35, 45, 60, 90, 180
    ]
    by_id = {s.id: s for s in standard}
    assert by_id["field-visit"].min_outstanding == 5000
    assert by_id["agency-placement"].max_outstanding == 5000
    assert by_id["filing"].min_outstanding == 1000
    assert by_id["lawyer-letter"].stage == Stage.LEGAL
    assert by_id["write-off"].stage == Stage.WRITTEN_OFF
    assert default.ladders["closed_end"][-1].day == 120
    accelerated = default.ladders["accelerated"]
    assert accelerated[-1].day == 180
    assert {s.id: s.day for s in accelerated}["formal-notice"] == 7
    demo, _ = policies["demo"]
    assert demo.day_seconds == 3
    assert [s.day for s in demo.ladders["standard"]] == [
        -1, 1, 2, 3, 5, 7, 10, 12, 12, 15, 20, 30
    ]
    us, _ = policies["us_default"]
    assert us.rule_pack == "us"
    assert not any(s.kind == "visit" for steps in us.ladders.values() for s in steps)


# --- broken files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (
            "unknown_channel.toml",
            "unknown_channel.toml: ladder 'standard' step 2 'early-sms': unknown channel 'fax' "
            "(allowed: sms, email, wecom, voice)",
        ),
        (
            "out_of_order.toml",
            "out_of_order.toml: ladder 'standard' step 3 'early-sms': steps out of order: "
            "day 3 comes after day 7",
        ),
        (
            "unknown_template.toml",
            "unknown_template.toml: ladder 'standard' step 2 'firm': unknown template "
            "'firm_reminders' (did you mean 'firm_reminder'?)",
        ),
        (
            "template_channel.toml",
            "template_channel.toml: ladder 'standard' step 1 'formal': template 'formal_notice' "
            "has no sms version (it has: email)",
        ),
        (
            "unknown_rule_pack.toml",
            "unknown_rule_pack.toml: rule_pack 'xx' is not a known rule pack (known: cn, us)",
        ),
        (
            "write_off_not_last.toml",
            "write_off_not_last.toml: ladder 'standard' step 2 'write-off': write_off must be "
            "the last step of the ladder",
        ),
        (
            "duplicate_step_id.toml",
            "duplicate_step_id.toml: ladder 'standard' step 3 'call': duplicate step id 'call' "
            "(also step 2)",
        ),
        (
            "missing_ladder.toml",
            "missing_ladder.toml: segment 2 'vip': ladder 'gold' does not exist "
            "(ladders: standard)",
        ),
        (
            "legal_without_action.toml",
            "legal_without_action.toml: ladder 'standard' step 1 'lawyer-letter': legal steps "
            "need an action",
        ),
    ],
)
def test_broken_policy(packs, file, expected):
    with pytest.raises(PolicyError) as raised:
        load_policy(BROKEN / file, rule_packs=packs, templates=TEMPLATES)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
    assert any(expected in line for line in validate_files([BROKEN / file], templates=TEMPLATES))


def test_write_off_not_last_also_says_the_ladder_must_end_with_one(packs):
    with pytest.raises(PolicyError) as raised:
        load_policy(BROKEN / "write_off_not_last.toml", rule_packs=packs, templates=TEMPLATES)
    assert raised.value.problems[1] == (
        "write_off_not_last.toml: ladder 'standard' step 3 'lawyer-letter': the ladder must end "
        "with a write_off step"
    )


def test_toml_syntax_error(packs):
    with pytest.raises(PolicyError, match=r"^syntax_error\.toml: TOML syntax error: .*line 3"):
        load_policy(BROKEN / "syntax_error.toml", rule_packs=packs, templates=TEMPLATES)


def test_broken_rule_packs():
    with pytest.raises(PolicyError) as raised:
        load_rule_pack(BROKEN / "rules" / "bad_cap.toml")
    assert str(raised.value) == "bad_cap.toml: caps[1].limit: must be a positive integer, got 0"
    with pytest.raises(PolicyError, match=r"bad_window\.toml: window_start \(22:00:00\) must be"):
        load_rule_pack(BROKEN / "rules" / "bad_window.toml")
    with pytest.raises(PolicyError, match=r"bad_cap\.toml"):
        load_rule_packs(BROKEN / "rules")


def test_templates_none_skips_the_catalogue(packs):
    policy, _ = load_policy(BROKEN / "unknown_template.toml", rule_packs=packs, templates=None)
    assert policy.name == "unknown_template"


def test_validate_files_reports_missing_file(tmp_path):
    errors = validate_files([tmp_path / "nope.toml"], templates=TEMPLATES)
    assert len(errors) == 1 and errors[0].startswith("nope.toml: cannot read")


def test_duplicate_policy_names(tmp_path, packs):
    text = (POLICIES_DIR / "demo.toml").read_text()
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(PolicyError, match=r"b\.toml: policy 'demo' is also defined in a\.toml"):
        load_policies(tmp_path, rule_packs=packs, templates=TEMPLATES)


def test_parse_policy_from_text(packs):
    text = (POLICIES_DIR / "demo.toml").read_text().replace('day_seconds = 3', 'day_seconds = 0')
    with pytest.raises(PolicyError, match=r"^x\.toml: day_seconds: must be a positive integer"):
        parse_policy(text, "x.toml", rule_packs=packs, templates=TEMPLATES)


# --- segments and resolution --------------------------------------------------------------------


def test_segment_selection(policies):
    default, _ = policies["default"]

    def pick(product="consumer", grade="B", amount="8000"):
        return select_segment(default, product, grade, Decimal(amount)).name

    assert pick(grade="D") == "high_risk"
    assert pick(grade="E", amount="100") == "high_risk"
    assert pick(product="installment") == "closed_end"
    assert pick(amount="499.99") == "small_balance"
    assert pick(amount="500") == "standard"
    assert pick(amount="20000") == "standard"
    assert default.ladders[select_segment(default, "consumer", "D", Decimal(1)).ladder][1].day == 1


def test_resolve_policy(policies, packs):
    resolved = resolve_policy(loan(), policies=policies, rule_packs=packs)
    assert (resolved.name, resolved.version) == ("default", "2026.11.1")
    assert (resolved.segment, resolved.ladder_name) == ("standard", "standard")
    assert resolved.steps == policies["default"][0].ladders["standard"]
    assert resolved.rule_pack == packs["cn"]
    assert resolved.source_sha256 == policies["default"][1]
    assert resolved.settings.day_seconds == 86400
    assert not hasattr(resolved.settings, "ladders")

    risky = resolve_policy(loan(risk_grade="E"), policies=policies, rule_packs=packs)
    assert risky.ladder_name == "accelerated"
    us = resolve_policy(loan(policy="us_default", product="installment", phone="+12125550123"),
                        policies=policies, rule_packs=packs)
    assert (us.rule_pack.name, us.ladder_name, us.steps[-1].day) == ("us", "closed_end", 120)
    demo = resolve_policy(loan(policy="demo"), policies=policies, rule_packs=packs)
    assert demo.settings.day_seconds == 3
    # What a workflow pins survives a JSON round trip unchanged.
    assert type(demo).model_validate_json(demo.model_dump_json()) == demo

    with pytest.raises(PolicyError, match=r"policy 'nope' is not known \(known: default, demo"):
        resolve_policy(loan(policy="nope"), policies=policies, rule_packs=packs)


def test_sha256_changes_with_the_file(tmp_path, packs):
    path = tmp_path / "default.toml"
    path.write_bytes((POLICIES_DIR / "default.toml").read_bytes())
    first, digest = load_policy(path, rule_packs=packs, templates=TEMPLATES)
    assert load_policy(path, rule_packs=packs, templates=TEMPLATES)[1] == digest
    path.write_text(path.read_text().replace('version = "2026.11.1"', 'version = "2026.11.2"'))
    second, changed = load_policy(path, rule_packs=packs, templates=TEMPLATES)
    assert changed != digest and second.version == "2026.11.2" and first.version == "2026.11.1"
