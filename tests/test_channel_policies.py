"""Policies that name the new channels (issue 17): `policy validate` takes a ladder with WeCom and
voice steps and refuses a channel that does not exist with the loader's message; `policy explain`
and `policy simulate` show the WeCom and voice steps (the CLI in-process, as tests/test_cli.py
runs it; the simulation on its own time-skipping server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import starter
from activities.templates import known_templates
from contracts.messages import LoanInput
from contracts.policy import ResolvedPolicy
from policies import loader as policy_loader
from service import policy_explain, policy_simulation

NAME = "new_channels"
POLICY = f"""
name = "{NAME}"
version = "test.1"
rule_pack = "cn"

[[segments]]
name = "all"
ladder = "standard"

[[ladders.standard]]
id = "pre-due-wecom"
day = -2
hour = 10
stage = "pre_due"
kind = "message"
channels = ["wecom"]
template = "pre_due_reminder"

[[ladders.standard]]
id = "early-voice"
day = 1
hour = 11
stage = "early"
kind = "message"
channels = ["voice"]
template = "early_reminder"

[[ladders.standard]]
id = "firm-both"
day = 5
hour = 10
stage = "middle"
kind = "message"
channels = ["wecom", "voice"]
template = "firm_reminder"

[[ladders.standard]]
id = "write-off"
day = 20
stage = "written_off"
kind = "write_off"
template = "write_off_notice"
notice = "collection_ending"
"""
CLI_ENV = {"COLUMNS": "200", "TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None}
LOAN = ["--loan-id", "NC1", "--name", "Li Lei", "--phone", "+8613800138000", "--email",
        "li@example.com", "--locale", "zh-CN", "--timezone", "Asia/Shanghai", "--currency", "CNY",
        "--amount", "1200.00", "--due-date", "2026-06-01", "--wecom-external-userid",
        "wmNewChannels0001"]


def cli(*args: str) -> Result:
    return CliRunner().invoke(starter.app, list(args), env=CLI_ENV)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / f"{NAME}.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def with_policy(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loans of these tests get this file's policy, read and resolved by the real loader (as
    if its name were in their `policy` column)."""
    packs = policy_loader.load_rule_packs()
    policies = policy_loader.load_policies(rule_packs=packs, templates=known_templates())
    policies[NAME] = policy_loader.load_policy(policy_file, rule_packs=packs,
                                               templates=known_templates())

    def resolve(loan: LoanInput) -> ResolvedPolicy:
        return policy_loader.resolve_policy(dataclasses.replace(loan, policy=NAME),
                                            policies=policies, rule_packs=packs)

    monkeypatch.setattr(policy_explain, "resolve", resolve)
    monkeypatch.setattr(policy_simulation, "resolve", resolve)


def test_validate_takes_wecom_and_voice_and_refuses_an_unknown_channel(
        policy_file: Path) -> None:
    good = cli("policy", "validate", str(policy_file))
    assert (good.exit_code, good.stdout.strip()) == (0, f"OK {policy_file}")
    fax = policy_file.with_name("fax.toml")
    fax.write_text(POLICY.replace(f'name = "{NAME}"', 'name = "fax"').replace(
        'channels = ["voice"]', 'channels = ["voice", "fax"]'))
    refused = cli("policy", "validate", str(fax))
    assert refused.exit_code == 2
    assert refused.stdout.strip() == (
        f"{fax}: ladder 'standard' step 2 'early-voice': unknown channel 'fax' "
        "(allowed: sms, email, wecom, voice)")


def test_explain_shows_the_wecom_and_voice_steps(with_policy: None) -> None:
    result = cli("policy", "explain", *LOAN, "--at", "2026-05-20T00:00:00Z")
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines()
             if line.startswith("│")]
    # step, stage, kind, channels, local time, note
    assert [(c[0], c[3], c[4]) for c in cells] == [
        ("pre-due-wecom", "wecom", "2026-05-30 10:00 CST"),
        ("early-voice", "voice", "2026-06-02 11:00 CST"),
        ("firm-both", "wecom, voice", "2026-06-06 10:00 CST"),
        ("write-off", "-", "2026-06-21 10:00 CST")], result.stdout
    assert f"policy {NAME} test.1" in result.stdout


def test_simulate_sends_over_wecom_and_voice(with_policy: None) -> None:
    result = cli("policy", "simulate", *LOAN, "--as-of", "2026-05-25")
    assert result.exit_code == 0, result.output
    sent = [line for line in result.stdout.splitlines() if "contact_sent" in line]
    # The simulated staff confirm every WeCom message; nobody answers a voice reminder.
    assert any("wecom sent" in line for line in sent), result.stdout
    assert any("voice sent" in line and "unanswered" in line for line in sent), result.stdout
    assert "contact_pending" in result.stdout  # the WeCom task waited for its confirmation
    assert "call_outcome" in result.stdout
    assert "loan NC1: written_off" in result.stdout
