"""Each role is refused where it must be: 401 without a (known) key, 403 with another role's key,
and nothing changes: no case started, no audit row, no Idempotency-Key taken."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from temporalio.service import RPCError, RPCStatusCode

from contracts.names import workflow_id_for
from tests.api.calls import Api, loan_body, new_id

WRITES = [("POST", "/v1/cases"), ("POST", "/v1/cases/L1/payments"), ("POST", "/v1/cases/L1/close")]
AGENT_WRITES = [("POST", "/v1/cases/L1/promise"), ("POST", "/v1/cases/L1/cease"),
                ("POST", "/v1/tasks/collection-L1/d4/outcome"),
                ("POST", "/v1/tasks/collection-L1/d4/release")]
READS = [("GET", "/v1/cases/L1"), ("GET", "/v1/cases"), ("GET", "/v1/cases/L1/history"),
         ("GET", "/v1/report")]


@pytest.mark.parametrize(("role", "routes"), [
    ("operator", WRITES), ("agent", WRITES),
    ("loan-system", AGENT_WRITES), ("operator", AGENT_WRITES),
    ("loan-system", READS), ("agent", READS),
    ("operator", [("GET", "/v1/tasks")]), ("loan-system", [("GET", "/v1/tasks")]),
])
async def test_wrong_role_is_403(api: Api, role: str, routes: list[tuple[str, str]]) -> None:
    async with api.http() as http:
        for method, path in routes:
            answer = await http.request(method, path, json={},
                                        headers=api.auth(role) | {"Idempotency-Key": "k"})
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["kind"] == "forbidden"


async def test_no_key_or_unknown_key_is_401_and_nothing_changes(api: Api,
                                                                 pool: asyncpg.Pool) -> None:
    loan_id = new_id()
    key = str(uuid.uuid4())
    async with api.http() as http:
        for headers in ({}, {"Authorization": "Bearer not-a-key-we-gave"},
                        {"Authorization": f"Basic {api.keys['loan-system']}"}):
            answer = await http.post("/v1/cases", json=loan_body(loan_id),
                                     headers=headers | {"Idempotency-Key": key})
            assert answer.status_code == 401, answer.text
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.headers["content-type"] == "application/problem+json"
        wrong_role = await http.post("/v1/cases", json=loan_body(loan_id),
                                     headers=api.auth("operator") | {"Idempotency-Key": key})
        assert wrong_role.status_code == 403
    with pytest.raises(RPCError) as info:
        await api.client.get_workflow_handle(workflow_id_for(loan_id)).describe()
    assert info.value.status == RPCStatusCode.NOT_FOUND
    assert await pool.fetchval("SELECT count(*) FROM api_audit WHERE idempotency_key = $1",
                               key) == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM api_idempotency WHERE idempotency_key = $1", key) == 0


async def test_keys_are_stored_as_digests_only(api: Api, pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT * FROM api_keys WHERE revoked_at IS NULL")
    stored = " ".join(str(dict(r)) for r in rows)
    assert {r["role"] for r in rows} >= {"loan-system", "agent", "operator"}
    for secret in api.keys.values():
        assert secret not in stored


async def test_health_and_readiness(api: Api) -> None:
    async with api.http() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"temporal": "ok", "postgres": "ok"}
