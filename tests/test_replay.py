"""Determinism: recorded histories replay against the current CollectionWorkflow code.

The histories in tests/histories/ come from tests/record_histories.py (paid in full after
reminders; unpaid to write-off on a small ladder; promise kept; plan broken). A change to the
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

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from infra.codec import data_converter
from workflows.sandbox import sandbox_runner
from contracts.case_io import CollectionInput
from workflows.collection_workflow import CaseInput, CollectionWorkflow
from contracts.messages import CaseResult
from contracts.names import workflow_id_for

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
SCENARIOS = {"paid_in_full", "write_off", "promise_kept", "plan_broken"}


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
    async def run(self, inp: CaseInput) -> CaseResult:
        await workflow.sleep(timedelta(minutes=1))
        return await super().run(inp)


@workflow.defn(name="CollectionWorkflow", sandboxed=False)
class PatchedChange(CollectionWorkflow):
    """The same change behind `workflow.patched`: old histories take the old path."""

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseResult:
        if workflow.patched("pause-before-first-step"):
            await workflow.sleep(timedelta(minutes=1))
        return await super().run(inp)


def test_all_scenarios_are_recorded() -> None:
    assert {p.stem for p in FILES} >= SCENARIOS, "run tests/record_histories.py"
    assert {p.stem for p in FILES} >= {f"{s}-{v}" for s in SCENARIOS for v in ("v2", "v3")}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_database_activity_path_is_recorded(name: str) -> None:
    """<scenario>.json predates LOCAL_DB_PATCH (database work as regular activities), -v2 ran it
    all as local activities, -v3 has DURABLE_WRITES_PATCH (writes regular again, the policy read
    local): replaying all three keeps cases started under each running after the next."""
    def kinds(path: Path) -> tuple[set[str], set[str]]:
        events = json.loads(path.read_text())["events"]
        activities = {e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                      for e in events if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"}
        markers = {e["markerRecordedEventAttributes"]["markerName"]
                   for e in events if e["eventType"] == "EVENT_TYPE_MARKER_RECORDED"}
        return activities, markers

    v1_activities, v1_markers = kinds(HISTORIES / f"{name}.json")
    v2_activities, v2_markers = kinds(HISTORIES / f"{name}-v2.json")
    v3_activities, v3_markers = kinds(HISTORIES / f"{name}-v3.json")
    assert {"record", "record_contact"} <= v1_activities and "core_local_activity" not in v1_markers
    assert "record" not in v2_activities and "resolve_policy" not in v2_activities
    assert {"core_patch", "core_local_activity"} <= v2_markers
    assert "record" in v3_activities and "resolve_policy" not in v3_activities
    assert "record_contact" not in v3_activities and "core_patch" in v3_markers


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
