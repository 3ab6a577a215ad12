"""Releasing a claim over HTTP: only the holder may (403 for another agent, 409 when nobody holds
the task), the release is audited like every write, and the task is back in the queue at once:
another agent claims it without waiting for the lease to lapse."""

from __future__ import annotations

import asyncpg

from tests.api.calls import Api, idem
from tests.api.conftest import AGENT_ID
from tests.api.test_api_claims import OTHER_AGENT, open_call_task, other_agent

__all__ = ["other_agent"]  # the fixture, shared with the claim tests


async def test_only_the_holder_releases_and_the_task_is_claimable_at_once(
        api: Api, pool: asyncpg.Pool, other_agent: dict[str, str]) -> None:
    loan_id, phone, task_key = await open_call_task(api, pool)
    async with api.http() as http:
        nobody = await http.post(f"/v1/tasks/{task_key}/release",
                                 headers=api.auth("agent") | idem())
        assert nobody.status_code == 409, nobody.text
        assert nobody.headers["content-type"] == "application/problem+json"
        assert (nobody.json()["kind"], nobody.json()["detail"]) == (
            "conflict", f"task {task_key} is not held by anyone")

        claimed = await http.post(f"/v1/tasks/{task_key}/claim",
                                  headers=api.auth("agent") | idem())
        assert claimed.status_code == 200, claimed.text

        theirs = await http.post(f"/v1/tasks/{task_key}/release", headers=other_agent | idem())
        assert theirs.status_code == 403, theirs.text
        assert theirs.headers["content-type"] == "application/problem+json"
        assert theirs.json()["kind"] == "forbidden"
        assert phone not in theirs.text
        still = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("operator"))
        assert still.json()["held_by"] == AGENT_ID

        wrong_role = await http.post(f"/v1/tasks/{task_key}/release",
                                     headers=api.auth("operator") | idem())
        assert wrong_role.status_code == 403, wrong_role.text

        key = idem()
        mine = await http.post(f"/v1/tasks/{task_key}/release", headers=api.auth("agent") | key)
        assert mine.status_code == 200, mine.text
        assert mine.json() == {"task_key": task_key, "loan_id": loan_id, "released_by": AGENT_ID}
        repeat = await http.post(f"/v1/tasks/{task_key}/release", headers=api.auth("agent") | key)
        assert (repeat.status_code, repeat.json()) == (200, mine.json())
        assert repeat.headers.get("Idempotent-Replayed") == "true"

        # Back in the queue at once: open, held by nobody, and another agent's claim succeeds
        # while the released lease would still have run for almost half an hour.
        queue = await http.get("/v1/tasks", params={"limit": 1000}, headers=other_agent)
        assert task_key in [t["task_key"] for t in queue.json()]
        shown = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("operator"))
        assert (shown.json()["status"], shown.json()["held_by"]) == ("open", None)
        again = await http.post(f"/v1/tasks/{task_key}/claim", headers=other_agent | idem())
        assert again.status_code == 200, again.text
        assert again.json()["agent"] == OTHER_AGENT

        unknown = await http.post("/v1/tasks/collection-NOPE/d4-call/release",
                                  headers=api.auth("agent") | idem())
        assert unknown.status_code == 404, unknown.text

    audit = await pool.fetch(
        "SELECT principal, action, status, outcome FROM api_audit "
        "WHERE action = 'release' AND loan_id = $1 ORDER BY id", loan_id)
    assert [(r["principal"], r["status"]) for r in audit] == [(OTHER_AGENT, 403), (AGENT_ID, 200)]
    assert audit[1]["outcome"] == f"released {task_key}"
