"""Determinism: recorded histories replay against the current CollectionWorkflow code.

The histories in tests/histories/ come from tests/record_histories.py (paid in full after
reminders; unpaid to write-off on a small ladder; promise kept; plan broken; from v4 an SMS
refused by the provider and its e-mail fallback; from v5 an agent's call out of hours, a dispute
withdrawing a task, an unapplied payment, and a malformed plain-JSON start; from v6 an agency
placement to its term, a WeCom message confirmed, a voice reminder answered, an opted-out SMS
skipped and fallen back from, and an SMS reported undelivered by the `delivery_failed` signal). A
change to the
workflow that makes a running case take a different sequence of commands (another activity,
timer or order) fails here: on a real server, running cases would fail their workflow tasks
with a nondeterminism error after the deploy.

Changing a path that running workflows have already passed: keep the old code for them and take
the new path only in executions that reach it after the deploy, with `workflow.patched`:

    if workflow.patched("send-sms-before-email"):     # new executions (and new code paths)
        await self._contact(step, "sms", template)
        await self._contact(step, "email", template)
    else:                                             # histories recorded before the change
        await self._contact(step, "email", template)
        await self._contact(step, "sms", template)

`patched` records a marker the first time a new execution reaches it and returns True; replaying
a history without that marker returns False, so the old branch replays unchanged. Once no
execution that started before the deploy is still running (or within its retention), replace the
call with `workflow.deprecate_patch("send-sms-before-email")` and drop the old branch; remove
that too a release later. Keep the old history files: they are what proves the old branch still
replays (record new scenarios as new files instead of overwriting them).

`test_patched_change_still_replays` below shows exactly that; `test_unpatched_change_fails_replay`
shows what happens without it.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.common import RawValue
from temporalio.worker import Replayer

from contracts.messages import CaseResult
from contracts.names import workflow_id_for
from infra.codec import data_converter
from workflows.agent_tasks import TASK_RULES_PATCH
from workflows.carried_writes import CARRY_PATCH, NOTICE_CHECK_PATCH
from workflows.collection_workflow import INPUT_CHECK_PATCH, CollectionWorkflow
from workflows.contacts import (
    DELIVERY_FAILED_PATCH,
    FOLLOW_UP_PATCH,
    NOTICE_SUPPRESSED_PATCH,
    ONE_FALLBACK_PATCH,
    SUPPRESSED_PATCH,
)
from workflows.effects import DURABLE_WRITES_PATCH
from workflows.placement import PLACEMENT_PATCH
from workflows.sandbox import sandbox_runner

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
SCENARIOS = {"paid_in_full", "write_off", "promise_kept", "plan_broken"}
# From v4 (the layered workflow on the channel table) also a provider refusal and its fallback.
V4_SCENARIOS = SCENARIOS | {"sms_refused"}
# From v5 (issue 14) also an agent's call out of hours and a dispute withdrawing a task, and a
# plain-JSON start that breaks the loan-file rules.
V5_SCENARIOS = V4_SCENARIOS | {"call_breach", "bad_start"}
# New in v6 (recorded only as -v6), each for a path no earlier recording takes: the scenario and
# the patch (and activities) its recording must have.
V6_PATHS: dict[str, tuple[str, set[str]]] = {
    "agency_placement": (PLACEMENT_PATCH, {"agency_roster", "record_placement"}),
    "wecom_confirmed": (FOLLOW_UP_PATCH, {"send_wecom", "follow_up_wecom"}),
    "voice_answered": (FOLLOW_UP_PATCH, {"send_voice", "follow_up_voice"}),
    "sms_opted_out": (SUPPRESSED_PATCH, {"send_sms", "send_email"}),
    "sms_undelivered": (DELIVERY_FAILED_PATCH, {"send_sms", "send_email"}),
}
V6_SCENARIOS = set(V6_PATHS)
V8_SCENARIOS = V5_SCENARIOS | V6_SCENARIOS
V9_SCENARIOS = V8_SCENARIOS


def version(path: Path) -> int:
    """1 for `<scenario>.json`, n for `<scenario>-vn.json`."""
    found = re.search(r"-v(\d+)$", path.stem)
    return int(found.group(1)) if found else 1


def history(path: Path) -> WorkflowHistory:
    # record_histories.py names the loan REPLAY-<scenario>; `<scenario>-v2` is a later recording
    scenario = re.sub(r"-v\d+$", "", path.stem)
    return WorkflowHistory.from_json(workflow_id_for(f"REPLAY-{scenario}"), path.read_text())


def replayer(*workflows: type) -> Replayer:
    return Replayer(workflows=list(workflows) or [CollectionWorkflow],
                    workflow_runner=sandbox_runner(), data_converter=data_converter(None))


@workflow.defn(name="CollectionWorkflow", sandboxed=False)
class UnpatchedChange(CollectionWorkflow):
    """A deploy that adds a pause before the first step, with no regard for running cases."""

    @workflow.run
    async def run(self, raw: RawValue) -> CaseResult:
        await workflow.sleep(timedelta(minutes=1))
        return await super().run(raw)


@workflow.defn(name="CollectionWorkflow", sandboxed=False)
class PatchedChange(CollectionWorkflow):
    """The same change behind `workflow.patched`: old histories take the old path."""

    @workflow.run
    async def run(self, raw: RawValue) -> CaseResult:
        if workflow.patched("pause-before-first-step"):
            await workflow.sleep(timedelta(minutes=1))
        return await super().run(raw)


def test_all_scenarios_are_recorded() -> None:
    assert {p.stem for p in FILES} >= SCENARIOS, "run tests/record_histories.py"
    assert {p.stem for p in FILES} >= {f"{s}-{v}" for s in SCENARIOS for v in ("v2", "v3")}
    assert {p.stem for p in FILES} >= {f"{s}-v4" for s in V4_SCENARIOS}
    assert {p.stem for p in FILES} >= {f"{s}-v5" for s in V5_SCENARIOS}
    assert {p.stem for p in FILES} >= {f"{s}-v6" for s in V6_SCENARIOS}
    assert {version(p) for p in FILES} == {1, 2, 3, 4, 5, 6, 7, 8, 9}  # 7: the vault shape
    # 8: writes travel with the actions (workflows/carried_writes.py), every scenario
    assert {p.stem for p in FILES} >= {f"{s}-v8" for s in V8_SCENARIOS}
    # 9: a notice's suppression check travels with its send, every scenario
    assert {p.stem for p in FILES} >= {f"{s}-v9" for s in V9_SCENARIOS}


def kinds(path: Path) -> tuple[set[str], set[str]]:
    """The activity types a history scheduled and the names of the markers it recorded."""
    events = json.loads(path.read_text())["events"]
    activities = {e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                  for e in events if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"}
    markers = {e["markerRecordedEventAttributes"]["markerName"]
               for e in events if e["eventType"] == "EVENT_TYPE_MARKER_RECORDED"}
    return activities, markers


def scheduled_activities(path: Path) -> list[str]:
    return [e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in json.loads(path.read_text())["events"]
            if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"]


def patch_ids(path: Path) -> set[str]:
    found = set()
    for e in json.loads(path.read_text())["events"]:
        if e["eventType"] == "EVENT_TYPE_MARKER_RECORDED":
            for payload in e["markerRecordedEventAttributes"]["details"].get(
                    "patch-data", {}).get("payloads", []):
                found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_database_activity_path_is_recorded(name: str) -> None:
    """<scenario>.json predates LOCAL_DB_PATCH (database work as regular activities), -v2 ran it
    all as local activities, -v3 has DURABLE_WRITES_PATCH (writes regular again, the policy read
    local): replaying all three keeps cases started under each running after the next."""
    v1_activities, v1_markers = kinds(HISTORIES / f"{name}.json")
    v2_activities, v2_markers = kinds(HISTORIES / f"{name}-v2.json")
    v3_activities, v3_markers = kinds(HISTORIES / f"{name}-v3.json")
    assert {"record", "record_contact"} <= v1_activities and "core_local_activity" not in v1_markers
    assert "record" not in v2_activities and "resolve_policy" not in v2_activities
    assert {"core_patch", "core_local_activity"} <= v2_markers
    assert "record" in v3_activities and "resolve_policy" not in v3_activities
    assert "record_contact" not in v3_activities and "core_patch" in v3_markers


@pytest.mark.parametrize("name", sorted(V4_SCENARIOS))
def test_v4_recordings_take_the_current_paths(name: str) -> None:
    """-v4 runs the durable writes as -v3 did; the refusal scenario also took the one fallback
    path (ONE_FALLBACK_PATCH), which no earlier recording has, so both of its branches replay."""
    activities, _ = kinds(HISTORIES / f"{name}-v4.json")
    assert "record" in activities and "record_contact" not in activities
    assert DURABLE_WRITES_PATCH in patch_ids(HISTORIES / f"{name}-v4.json")
    has_fallback = ONE_FALLBACK_PATCH in patch_ids(HISTORIES / f"{name}-v4.json")
    assert has_fallback == (name == "sms_refused")
    if name == "sms_refused":
        assert {"send_sms", "send_email"} <= activities


@pytest.mark.parametrize("name", sorted(V5_SCENARIOS))
def test_v5_recordings_take_the_issue_14_paths(name: str) -> None:
    """-v5: every case with a call or visit took TASK_RULES_PATCH (no earlier recording did, so
    both task paths replay); only the bad start took INPUT_CHECK_PATCH, and ended at once."""
    path = HISTORIES / f"{name}-v5.json"
    activities, _ = kinds(path)
    patches = patch_ids(path)
    assert (TASK_RULES_PATCH in patches) == ("create_task" in activities)
    assert (INPUT_CHECK_PATCH in patches) == (name == "bad_start")
    if name == "bad_start":
        events = json.loads(path.read_text())["events"]
        assert not activities and events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"
    for older in HISTORIES.glob("*.json"):
        if version(older) < 5:
            assert not {TASK_RULES_PATCH, INPUT_CHECK_PATCH} & patch_ids(older), older.name


@pytest.mark.parametrize("name", sorted(V6_SCENARIOS))
def test_v6_recordings_take_the_new_paths(name: str) -> None:
    """-v6: each new scenario took its patch (an agency placement, a channel's follow-up, a
    suppressed SMS skipped and fallen back from, the `delivery_failed` signal); no recording
    before v6 took any of them, so both branches of each replay."""
    path = HISTORIES / f"{name}-v6.json"
    activities, _ = kinds(path)
    patch, needed = V6_PATHS[name]
    assert patch in patch_ids(path)
    assert needed <= activities, activities
    events = json.loads(path.read_text())["events"]
    signals = [e["workflowExecutionSignaledEventAttributes"]["signalName"] for e in events
               if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"]
    assert ("delivery_failed" in signals) == (name == "sms_undelivered"), signals
    if name in ("sms_opted_out", "sms_undelivered"):  # the e-mail went out as the fallback
        assert ONE_FALLBACK_PATCH in patch_ids(path)
    new = {PLACEMENT_PATCH, FOLLOW_UP_PATCH, SUPPRESSED_PATCH, DELIVERY_FAILED_PATCH}
    for older in HISTORIES.glob("*.json"):
        if version(older) < 6:
            assert not new & patch_ids(older), older.name


@pytest.mark.parametrize("name", sorted(V8_SCENARIOS - {"bad_start"}))
def test_v8_recordings_carry_their_writes(name: str) -> None:
    """-v8: every case took CARRY_PATCH: no `record_placement`, no more `record`s than sends,
    follow-ups, tasks and legal actions together (a record goes out only for what no action
    carried before a wait); no recording before v8 took it, so both shapes replay."""
    path = HISTORIES / f"{name}-v8.json"
    assert CARRY_PATCH in patch_ids(path)
    scheduled = Counter(scheduled_activities(path))
    assert "record_placement" not in scheduled, scheduled
    actions = sum(n for a, n in scheduled.items() if a.startswith(("send_", "follow_up_"))
                  or a in ("create_task", "close_task", "record_legal_action"))
    assert actions > 0 and scheduled["record"] <= actions, scheduled
    for older in HISTORIES.glob("*.json"):
        if version(older) < 8:
            assert CARRY_PATCH not in patch_ids(older), older.name


@pytest.mark.parametrize("name", sorted(V9_SCENARIOS - {"bad_start"}))
def test_v9_recordings_check_notices_with_their_sends(name: str) -> None:
    """-v9: every case took NOTICE_CHECK_PATCH (and so never asks NOTICE_SUPPRESSED_PATCH, which
    it implies); a receipt's check went with its send, so paid in full schedules no
    `reserve_contact` where -v8 did; no recording before v9 took it."""
    path = HISTORIES / f"{name}-v9.json"
    assert NOTICE_CHECK_PATCH in patch_ids(path)
    assert NOTICE_SUPPRESSED_PATCH not in patch_ids(path)
    if name == "paid_in_full":
        assert "reserve_contact" in scheduled_activities(HISTORIES / f"{name}-v8.json")
        assert "reserve_contact" not in scheduled_activities(path)
    for older in HISTORIES.glob("*.json"):
        if version(older) < 9:
            assert NOTICE_CHECK_PATCH not in patch_ids(older), older.name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays(path: Path) -> None:
    result = await replayer().replay_workflow(history(path))
    assert result.replay_failure is None


async def test_unpatched_change_fails_replay() -> None:
    with pytest.raises(workflow.NondeterminismError):
        await replayer(UnpatchedChange).replay_workflow(history(HISTORIES / "paid_in_full.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_patched_change_still_replays(path: Path) -> None:
    result = await replayer(PatchedChange).replay_workflow(history(path))
    assert result.replay_failure is None

