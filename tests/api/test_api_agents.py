"""An agent over HTTP: the workflow's answer to a promise, its refusal as problem details with the
workflow's own reason, and the agent named by its key, not by the body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.api.calls import Api, idem, loan_body, new_id
from tests.api.conftest import AGENT_ID
from tests.helpers import eventually


async def test_promise_answered_and_refused_with_the_workflows_reason(
        api: Api, pool: asyncpg.Pool) -> None:
    loan_id = new_id()
    soon = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    async with api.http() as http:
        started = await http.post("/v1/cases", json=loan_body(loan_id),
                                  headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        await eventually(lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
                         lambda r: r.status_code == 200)

        too_much = await http.post(
            f"/v1/cases/{loan_id}/promise",
            json={"amount": "5000.00", "currency": "CNY", "date": soon},
            headers=api.auth("agent") | idem())
        assert too_much.status_code == 422, too_much.text
        assert too_much.headers["content-type"] == "application/problem+json"
        problem = too_much.json()
        assert problem["kind"] == "refused"
        assert problem["detail"] == "promised amount 5000.00 exceeds the balance 1200.00"

        bad = await http.post(f"/v1/cases/{loan_id}/promise",
                              json={"amount": "10.001", "currency": "CNY", "date": soon},
                              headers=api.auth("agent") | idem())
        assert (bad.status_code, bad.json()["field"]) == (422, "amount")

        kept = await http.post(f"/v1/cases/{loan_id}/promise",
                               json={"amount": "600.00", "currency": "CNY", "date": soon},
                               headers=api.auth("agent") | idem())
        assert kept.status_code == 200, kept.text
        assert kept.json()["accepted"] is True
        status = (await http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator"))).json()
    assert status["promise"]["agent"] == AGENT_ID
    audit = await pool.fetch(
        "SELECT principal, action, status FROM api_audit WHERE loan_id = $1 AND role = 'agent' "
        "ORDER BY id", loan_id)
    # The refusal is an answer (kept and audited); the bad amount never reached the case.
    assert [(r["principal"], r["action"], r["status"]) for r in audit] == [
        (AGENT_ID, "promise", 422), (AGENT_ID, "promise", 200)]
