"""The rule pack follows the borrower's jurisdiction: the explicit column, else the phone."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.messages import CaseState, LoanInput
from contracts.policy import PolicyFile, ResolvedPolicy, RulePack
from policies import compliance
from policies.jurisdiction import (
    COUNTRIES,
    JurisdictionError,
    choose_pack,
    explain_jurisdiction,
    normalise,
)
from policies.loader import (
    POLICIES_DIR,
    PolicyError,
    load_policies,
    load_rule_packs,
    parse_policy,
    parse_rule_pack,
    resolve_policy,
)
from tests.helpers import make_loan, start_case

PACKS = load_rule_packs()
POLICIES = load_policies(rule_packs=PACKS)
NEW_YORK = "+12125550123"
LONDON = "+442079460000"
GB_REFUSED = "no contact rules for jurisdiction GB; add a rule pack or set jurisdiction"


def loan(**overrides: Any) -> LoanInput:
    fields: dict[str, Any] = dict(
        loan_id="J-1", borrower_name="Li Lei", phone="+8613800138000", email="li@example.com",
        locale="en", timezone="Asia/Shanghai", currency="CNY",
        amount_overdue=Decimal("1200.00"), due_date=date(2026, 11, 1),
    )
    return LoanInput(**(fields | overrides))


def resolve(item: LoanInput, policies: dict[str, tuple[PolicyFile, str]] = POLICIES,
            packs: dict[str, RulePack] = PACKS) -> ResolvedPolicy:
    return resolve_policy(item, policies=policies, rule_packs=packs)


def explain(item: LoanInput, packs: dict[str, RulePack] = PACKS) -> Any:
    return explain_jurisdiction(item, POLICIES[item.policy or "default"][0], packs)


def with_pack(name: str, jurisdictions: list[str]) -> dict[str, RulePack]:
    extra = PACKS["us"].model_copy(update={"name": name, "jurisdictions": jurisdictions})
    return {**PACKS, name: extra}


# --- which pack ---------------------------------------------------------------------------------


def test_shipped_packs_declare_their_countries() -> None:
    assert (PACKS["cn"].jurisdictions, PACKS["us"].jurisdictions) == (["CN"], ["US"])
    assert POLICIES["us_default"][0].jurisdictions == ["US"]
    assert POLICIES["default"][0].jurisdictions == []  # any jurisdiction that has a pack


def test_new_york_phone_gets_the_us_pack_under_default() -> None:
    choice = explain(loan(phone=NEW_YORK, timezone="America/New_York"))
    assert (choice.jurisdiction, choice.source, choice.pack) == ("US", "phone", "us")
    assert choice.reason == "rule pack us covers US (policy default's own pack cn does not)"
    resolved = resolve(loan(phone=NEW_YORK, timezone="America/New_York"))
    assert resolved.rule_pack.name == "us" and resolved.name == "default"
    assert resolved.settings.rule_pack == "cn"  # the policy's own setting is kept as written


def test_shanghai_gets_the_cn_pack() -> None:
    choice = explain(loan())
    assert (choice.jurisdiction, choice.source, choice.pack) == ("CN", "phone", "cn")
    assert choice.reason == "rule pack cn covers CN (policy default's own pack)"
    assert resolve(loan()).rule_pack == PACKS["cn"]


def test_london_is_refused_with_the_exact_message() -> None:
    with pytest.raises(JurisdictionError) as raised:
        resolve(loan(phone=LONDON, timezone="Europe/London"))
    assert str(raised.value) == GB_REFUSED
    assert raised.value.field == "jurisdiction"
    # Callers refusing bad input catch either; the policy activity treats LookupError as final.
    assert isinstance(raised.value, LookupError) and isinstance(raised.value, ValueError)
    assert "2079460000" not in str(raised.value)


def test_explicit_jurisdiction_overrides_the_phone() -> None:
    choice = explain(loan(jurisdiction=" us-ny "))  # Chinese number, New York resident
    assert (choice.jurisdiction, choice.source, choice.pack) == ("US-NY", "column", "us")
    assert resolve(loan(jurisdiction="US")).rule_pack.name == "us"
    assert explain(loan(phone=NEW_YORK, jurisdiction="CN")).pack == "cn"
    with pytest.raises(JurisdictionError, match=f"^{GB_REFUSED}$"):
        resolve(loan(jurisdiction="GB"))  # a British resident with a Chinese number


def test_subdivision_falls_back_to_the_country_pack_and_prefers_its_own() -> None:
    choice = explain(loan(jurisdiction="US-NY"))
    assert choice.pack == "us"
    assert choice.reason == (
        "no pack covers US-NY; rule pack us covers US (policy default's own pack cn does not)"
    )
    packs = with_pack("us_ny", ["US-NY"])
    assert explain(loan(jurisdiction="US-NY"), packs).pack == "us_ny"
    assert explain(loan(jurisdiction="US-CA"), packs).pack == "us"
    assert explain(loan(phone=NEW_YORK), packs).pack == "us"  # a phone gives no state
    assert resolve(loan(jurisdiction="US-NY"), packs=packs).rule_pack.name == "us_ny"
    with pytest.raises(JurisdictionError, match=r"^no contact rules for jurisdiction GB-LND; "):
        resolve(loan(jurisdiction="GB-LND"))


def test_equal_packs_are_settled_by_the_policy_or_refused() -> None:
    packs = with_pack("cn_strict", ["CN"])
    assert explain(loan(), packs).pack == "cn"  # default names cn
    us_policy = POLICIES["default"][0].model_copy(update={"name": "p", "rule_pack": "us"})
    with pytest.raises(JurisdictionError) as raised:
        choose_pack("CN", "phone", us_policy, packs)
    assert str(raised.value) == (
        "jurisdiction CN is covered by rule packs cn, cn_strict; policy p must name one of them "
        "as rule_pack"
    )


@pytest.mark.parametrize("code", ["XX", "U", "USA", "US-", "US-NEWY", "US NY", "12", "Li Lei",
                                  "+12125550123", "li@example.com", "-"])
def test_bad_jurisdiction_code_is_refused_naming_the_field(code: str) -> None:
    with pytest.raises(JurisdictionError) as raised:
        resolve(loan(jurisdiction=code))
    message = str(raised.value)
    assert message == (
        "jurisdiction is not an ISO 3166 country or subdivision code (e.g. US or US-NY)"
    )
    assert raised.value.field == "jurisdiction"
    assert not any(v in message for v in ["Li", "2125550123", "example"])  # never echoed


def test_normalise() -> None:
    assert [normalise(c) for c in ["us", " cn ", "us-ny", "GB-LND", "FR-75C"]] == [
        "US", "CN", "US-NY", "GB-LND", "FR-75C"]
    assert len(COUNTRIES) == 249 and {"CN", "US", "GB", "HK", "TW"} <= COUNTRIES
    assert "XK" not in COUNTRIES  # Kosovo's code is user-assigned, not ISO 3166-1


def test_a_phone_without_a_country_is_refused() -> None:
    for phone in ["+80012345678", "+100", "12345"]:  # non-geographic, unassigned, not E.164
        with pytest.raises(JurisdictionError, match=(
            r"^no jurisdiction: the phone number gives no country; set jurisdiction$"
        )):
            resolve(loan(phone=phone))
    assert resolve(loan(phone="+80012345678", jurisdiction="CN")).rule_pack.name == "cn"


# --- policies restricted to jurisdictions -------------------------------------------------------


def _cn_only() -> dict[str, tuple[PolicyFile, str]]:
    text = (POLICIES_DIR / "default.toml").read_text().replace(
        'name = "default"', 'name = "cn_only"\njurisdictions = ["CN"]', 1)
    policy = parse_policy(text, "cn_only.toml", rule_packs=PACKS, templates=None)
    return {**POLICIES, "cn_only": (policy, "0" * 64)}


def test_a_policy_restricted_to_cn_refuses_a_us_loan() -> None:
    policies = _cn_only()
    assert resolve(loan(policy="cn_only"), policies).rule_pack.name == "cn"
    assert resolve(loan(policy="cn_only", jurisdiction="CN-SH"), policies).rule_pack.name == "cn"
    with pytest.raises(JurisdictionError) as raised:
        resolve(loan(policy="cn_only", phone=NEW_YORK), policies)
    assert str(raised.value) == (
        "policy cn_only applies to jurisdictions CN only, not US; choose another policy or set "
        "jurisdiction"
    )
    with pytest.raises(JurisdictionError, match=r"^policy us_default applies to jurisdictions US "):
        resolve(loan(policy="us_default"))  # a Shanghai borrower on the US policy


def test_policy_and_pack_files_check_their_jurisdictions() -> None:
    default = (POLICIES_DIR / "default.toml").read_text()

    def problems(text: str) -> list[str]:
        with pytest.raises(PolicyError) as raised:
            parse_policy(text, "p.toml", rule_packs=PACKS, templates=None)
        return raised.value.problems

    bad = default.replace('rule_pack = "cn"', 'rule_pack = "cn"\njurisdictions = ["cn", "GB"]', 1)
    assert problems(bad) == [
        "p.toml: jurisdictions: 'cn' is not an upper-case ISO 3166 country or subdivision code "
        "(e.g. US or US-NY)",
        "p.toml: jurisdictions: no rule pack covers GB, so no loan could start",
        "p.toml: rule_pack 'cn' covers none of the policy's jurisdictions (cn, GB)",
    ]
    foreign = default.replace('rule_pack = "cn"', 'rule_pack = "cn"\njurisdictions = ["US"]', 1)
    assert problems(foreign) == [
        "p.toml: rule_pack 'cn' covers none of the policy's jurisdictions (US)"]

    pack = (POLICIES_DIR / "rules" / "us.toml").read_text()
    with pytest.raises(PolicyError) as raised:
        parse_rule_pack(pack.replace('jurisdictions = ["US"]\n', ""), "x.toml")
    assert str(raised.value) == (
        'x.toml: jurisdictions: list the ISO 3166 codes the pack covers (e.g. ["US"])')
    with pytest.raises(PolicyError, match=r"^x\.toml: jurisdictions: 'USA' is not an upper-case"):
        parse_rule_pack(pack.replace('["US"]', '["USA"]'), "x.toml")


def test_pinned_policies_from_before_jurisdictions_still_decode() -> None:
    resolved = resolve(loan(phone=NEW_YORK))
    data = resolved.model_dump(mode="json")
    assert data["rule_pack"].pop("jurisdictions") == ["US"]
    assert data["settings"].pop("jurisdictions") == []
    old = ResolvedPolicy.model_validate(data)
    assert old.rule_pack.jurisdictions == [] and old.rule_pack.name == "us"
    recorded = {k: v for k, v in vars(loan()).items() if k != "jurisdiction"}
    assert LoanInput(**recorded).jurisdiction == ""


# --- through the real workflow ------------------------------------------------------------------


async def test_new_york_case_decides_contacts_by_the_us_rules(
    ts_env: WorkflowEnvironment, ts_worker: Worker, pool: asyncpg.Pool, loan_id: str,
) -> None:
    now = await ts_env.get_current_time()
    due = compliance.local(now, "America/New_York").date() + timedelta(days=5)
    ny = make_loan(loan_id, due, phone="+1212555" + loan_id[-4:].translate(
        str.maketrans("abcdef", "012345")), timezone="America/New_York", currency="USD")
    # No policy pinned: the workflow resolves `default` itself, as a case from the loan system.
    handle = await start_case(ts_env.client, ny, ts_worker.task_queue)
    result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.state == CaseState.WRITTEN_OFF
    rows = await pool.fetch("SELECT decision, rule, step_id FROM contacts WHERE loan_id = $1",
                            ny.loan_id)
    # The rule pack's decisions (windows, caps, notices); the case's own reason codes
    # (`case.*`, `provider.*`) are the same under every pack.
    ruled = [r["rule"] for r in rows
             if r["rule"] and not r["rule"].startswith(("case.", "provider."))]
    assert ruled and all(rule.startswith("us.") for rule in ruled), ruled
    sent = [r["step_id"] for r in rows if r["decision"] == "sent"]
    assert "validation-notice" in sent  # the us pack's notice, which cn does not send
