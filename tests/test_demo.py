"""The demo waits while cases make progress and, when it gives up, names each unfinished case, its
stage and what it waits for (`demo_progress.py`, pure: no servers). One real run of the give-up
path (a demo with no time to finish) checks the message reaches the terminal."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.messages import CaseState, CaseStatus, Stage
from demo_progress import Progress, give_up_message
from tests.worker_process import ROOT


def status(loan_id: str, state: CaseState = CaseState.ACTIVE, stage: Stage = Stage.EARLY,
           **changes: object) -> CaseStatus:
    base = CaseStatus(
        loan_id=loan_id, state=state, stage=stage, days_past_due=3,
        outstanding=Decimal("1200.00"), currency="CNY", principal=Decimal("1200.00"),
        interest=Decimal(0), fees=Decimal(0), paid_total=Decimal(0),
        next_action="early-call", next_action_at=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
        promise=None, plan=None, settlement=None, hold=None, contact_counts={"sms": 1},
        policy_name="demo", policy_version="2026.11.1", segment="demo", rule_pack="cn",
        ceased=False, assigned_agent=None, run_count=1)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_any_change_keeps_it_waiting_and_a_stall_gives_up() -> None:
    progress = Progress(stall_seconds=10, max_seconds=1000, started=0)
    progress.observe({"A": status("A"), "B": None}, now=1)
    for t in range(2, 60, 5):  # a slow machine: one case moves a little every 5 s
        progress.observe({"A": status("A", days_past_due=t), "B": None}, now=t)
        assert not progress.give_up(now=t + 4)
    progress.observe({"A": status("A", days_past_due=57), "B": None}, now=62)  # nothing moved
    assert not progress.give_up(now=67)
    assert progress.give_up(now=68)
    assert progress.stalled_for(now=68) == 11


def test_the_overall_limit_gives_up_even_while_cases_move() -> None:
    progress = Progress(stall_seconds=10, max_seconds=30, started=0)
    for t in range(0, 31):
        progress.observe({"A": status("A", days_past_due=t)}, now=t)
    assert not progress.give_up(now=30) and progress.give_up(now=31)


def test_all_finished_only_when_every_case_has_ended() -> None:
    progress = Progress(stall_seconds=10, max_seconds=30, started=0)
    ended = {"A": status("A", CaseState.PAID, Stage.EARLY),
             "B": status("B", CaseState.WRITTEN_OFF, Stage.WRITTEN_OFF)}
    assert progress.all_finished(ended)
    assert not progress.all_finished({**ended, "C": None})
    assert not progress.all_finished({**ended, "C": status("C")})
    assert not progress.all_finished({})


def test_give_up_message_names_each_unfinished_case_its_stage_and_what_it_waits_for() -> None:
    statuses = {
        "DEMO-001": status("DEMO-001", CaseState.PAID),
        "DEMO-002": status("DEMO-002", stage=Stage.LEGAL, days_past_due=16,
                           next_action="filing",
                           next_action_at=datetime(2026, 12, 2, 2, 0, tzinfo=UTC)),
        "DEMO-003": status("DEMO-003", stage=Stage.LATE, next_action=None, next_action_at=None),
        "DEMO-004": None,
    }
    text = give_up_message(statuses, stalled_for=61, elapsed=200, day_seconds=3,
                           no_status={"DEMO-004": "the workflow is completed"})
    first, *cases = text.splitlines()
    assert "3 of 4 cases did not reach an end state" in first
    assert "61 s (20 policy days)" in first
    assert [c.split(":")[0].strip() for c in cases] == ["DEMO-002", "DEMO-003", "DEMO-004"]
    assert "active at stage legal, day 16; waiting for filing at 2026-12-02 02:00 UTC" in cases[0]
    assert "stage late" in cases[1] and "nothing scheduled" in cases[1]
    assert "no status: the workflow is completed" in cases[2]
    assert "DEMO-001" not in text


@pytest.mark.slow
def test_a_real_demo_that_gives_up_names_its_cases() -> None:
    """The whole demo with no time to finish: exit 1, and the message names unfinished cases."""
    # Its own state folder (0755: PostgreSQL runs as its own user under root), never the
    # checkout's .state/demo, which a `make demo` running meanwhile owns.
    state = Path(tempfile.mkdtemp(prefix="collections-demo-"))
    state.chmod(0o755)
    env = {**os.environ, "DEMO_MAX_SECONDS": "8", "DEMO_STATE_DIR": str(state / "demo"),
           "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items()
           if not k.startswith(("TEMPORAL_", "TWILIO_", "SENDGRID_", "DATABASE_"))}
    try:
        done = subprocess.run([sys.executable, "demo.py"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cases did not reach an end state" in done.stdout, done.stdout[-3000:]
    assert "DEMO-0" in done.stdout.split("cases did not reach an end state")[1]
    assert "waiting for" in done.stdout
