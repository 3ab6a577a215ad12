"""Claims over HTTP: two agents claiming one task, one refused; the borrower's phone shown in full
only to the agent holding the claim, and that reveal in the access log; the holder's outcome
acted on by the workflow, another agent's refused."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from api.keys import digest
from tests.api.calls import Api, idem, loan_body, new_id
from tests.api.conftest import AGENT_ID
from tests.helpers import eventually

OTHER_AGENT = "agent-9"


def zone_at_local_hour(hour: int) -> str:
    """An IANA zone (Etc/GMT±N) whose wall clock shows `hour` now."""
    offset = (hour - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX sign: GMT-8 is UTC+8


@pytest.fixture(scope="module")
async def other_agent(pool: asyncpg.Pool) -> AsyncIterator[dict[str, str]]:
    """A second agent's key, stored as the app stores configured ones."""
    secret = secrets.token_urlsafe(24)
    await pool.execute(
        "INSERT INTO api_keys (key_sha256, name, role) VALUES ($1, $2, 'agent') "
        "ON CONFLICT (key_sha256) DO NOTHING", digest(secret), OTHER_AGENT)
    yield {"Authorization": f"Bearer {secret}"}
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE key_sha256 = $1",
                       digest(secret))


async def open_call_task(api: Api, pool: asyncpg.Pool) -> tuple[str, str, str]:
    """(loan id, phone, task key) of a case started over HTTP whose first call (D+4) is due now,
    in the afternoon at the borrower's: the workflow opens the call task at once."""
    zone = zone_at_local_hour(15)
    loan_id = new_id()
    phone = "+86139" + str(uuid.uuid4().int)[:8]
    due = (datetime.now(ZoneInfo(zone)) - timedelta(days=4)).date().isoformat()
    async with api.http() as http:
        started = await http.post("/v1/cases", json=loan_body(
            loan_id, phone=phone, timezone=zone, due_date=due),
            headers=api.auth("loan-system") | idem())
    assert started.status_code == 200, started.text
    key = await eventually(
        lambda: pool.fetchval("SELECT task_key FROM tasks WHERE loan_id = $1 AND status = 'open'",
                              loan_id),
        lambda k: k is not None, timeout=60)
    return loan_id, phone, str(key)


async def test_two_agents_claim_one_task_and_one_is_refused(
        api: Api, pool: asyncpg.Pool, other_agent: dict[str, str]) -> None:
    _, _, task_key = await open_call_task(api, pool)
    async with api.http() as http:
        mine = await http.post(f"/v1/tasks/{task_key}/claim",
                               headers=api.auth("agent") | idem())
        assert mine.status_code == 200, mine.text
        assert (mine.json()["agent"], mine.json()["task_key"]) == (AGENT_ID, task_key)
        lease = datetime.fromisoformat(mine.json()["lease_until"])
        assert timedelta(minutes=25) < lease - datetime.now(UTC) <= timedelta(minutes=30)

        theirs = await http.post(f"/v1/tasks/{task_key}/claim", headers=other_agent | idem())
        assert theirs.status_code == 409, theirs.text
        assert theirs.headers["content-type"] == "application/problem+json"
        assert theirs.json()["kind"] == "conflict"

        renewed = await http.post(f"/v1/tasks/{task_key}/claim",
                                  headers=api.auth("agent") | idem())
        assert renewed.status_code == 200, renewed.text

        unknown = await http.post("/v1/tasks/collection-NOPE/d4-call/claim",
                                  headers=api.auth("agent") | idem())
        assert unknown.status_code == 404
    holders = await pool.fetch("SELECT agent FROM task_claims WHERE task_key = $1", task_key)
    assert [r["agent"] for r in holders] == [AGENT_ID]


async def test_a_lapsed_claim_can_be_taken_by_another_agent(
        api: Api, pool: asyncpg.Pool, other_agent: dict[str, str]) -> None:
    _, _, task_key = await open_call_task(api, pool)
    async with api.http() as http:
        mine = await http.post(f"/v1/tasks/{task_key}/claim",
                               headers=api.auth("agent") | idem())
        assert mine.status_code == 200, mine.text
        # Not worked for the lease's length: the claim lapses.
        await pool.execute("UPDATE task_claims SET lease_until = now() - interval '1 second' "
                           "WHERE task_key = $1", task_key)
        theirs = await http.post(f"/v1/tasks/{task_key}/claim", headers=other_agent | idem())
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["agent"] == OTHER_AGENT


async def test_the_phone_is_revealed_only_to_the_claiming_agent_and_logged(
        api: Api, pool: asyncpg.Pool, other_agent: dict[str, str]) -> None:
    loan_id, phone, task_key = await open_call_task(api, pool)
    async with api.http() as http:
        before = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("agent"))
        assert before.status_code == 200, before.text
        assert before.json()["contact"]["revealed"] is False and phone not in before.text

        claimed = await http.post(f"/v1/tasks/{task_key}/claim",
                                  headers=api.auth("agent") | idem())
        assert claimed.status_code == 200, claimed.text
        held = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("agent"))
        theirs = await http.get(f"/v1/tasks/{task_key}", headers=other_agent)
        operator = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("operator"))
        refused = await http.get(f"/v1/tasks/{task_key}", headers=api.auth("loan-system"))

    assert held.status_code == 200, held.text
    shown = held.json()
    assert (shown["loan_id"], shown["held_by"], shown["status"]) == (loan_id, AGENT_ID, "open")
    assert shown["contact"]["phone"] == phone and shown["contact"]["revealed"] is True
    assert "@example.com" not in held.text  # the e-mail address stays masked
    for other in (theirs, operator):
        assert other.status_code == 200, other.text
        assert other.json()["contact"]["revealed"] is False
        assert phone not in other.text and phone[-6:] not in other.text
    assert refused.status_code == 403

    reveals = await pool.fetch(
        "SELECT agent, task_key, fields, surface FROM contact_reveals WHERE loan_id = $1",
        loan_id)
    assert [tuple(r) for r in reveals] == [(AGENT_ID, task_key, "phone", "api")]


async def test_the_holders_outcome_is_acted_on_and_anothers_refused(
        api: Api, pool: asyncpg.Pool, other_agent: dict[str, str]) -> None:
    loan_id, _, task_key = await open_call_task(api, pool)
    outcome = {"loan_id": loan_id, "outcome": "refused", "note": "will not pay"}
    async with api.http() as http:
        claimed = await http.post(f"/v1/tasks/{task_key}/claim",
                                  headers=api.auth("agent") | idem())
        assert claimed.status_code == 200, claimed.text
        outcome["at"] = datetime.now(UTC).isoformat()  # the call, just made
        theirs = await http.post(f"/v1/tasks/{task_key}/outcome", json=outcome,
                                 headers=other_agent | idem())
        assert theirs.status_code == 409, theirs.text
        assert theirs.json()["kind"] == "conflict"

        mine = await http.post(f"/v1/tasks/{task_key}/outcome", json=outcome,
                               headers=api.auth("agent") | idem())
        assert mine.status_code == 200, mine.text
        assert mine.json()["accepted"] is True

        # The workflow acts on it: a refusal escalates the case to its next stage.
        timeline = await eventually(
            lambda: http.get(f"/v1/cases/{loan_id}/timeline", headers=api.auth("operator")),
            lambda r: any(e["kind"] == "escalated" for e in r.json()), timeout=30)
    events = timeline.json()
    told = [e for e in events if e["kind"] == "task_outcome"]
    assert [(e["actor"], e["detail"]["outcome"]) for e in told] == [(AGENT_ID, "refused")]
    assert any("call outcome refused" in e["summary"] for e in events if e["kind"] == "escalated")
    task = await eventually(
        lambda: pool.fetchrow("SELECT status, outcome, agent FROM tasks WHERE task_key = $1",
                              task_key),
        lambda r: r["status"] != "open")
    assert (task["outcome"], task["agent"]) == ("refused", AGENT_ID)
