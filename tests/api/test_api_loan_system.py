"""A loan system over HTTP: cases opened one by one and in batches (answered row by row), a
payment that closes a case, Idempotency-Key repeats answered once, and the audit trail."""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio.client import WorkflowExecutionStatus

from contracts.names import workflow_id_for
from tests.api.calls import Api, idem, loan_body, new_id
from tests.helpers import eventually


async def test_batch_answers_row_by_row(api: Api, pool: asyncpg.Pool) -> None:
    running, fresh, bad = new_id(), new_id(), new_id()
    async with api.http() as http:
        first = await http.post("/v1/cases", json=loan_body(running),
                                headers=api.auth("loan-system") | idem())
        assert first.status_code == 200, first.text
        assert first.json() == {"loan_id": running, "outcome": "started"}

        batch = {"loans": [
            loan_body(running),
            loan_body(fresh),
            loan_body(fresh),
            loan_body(bad, phone="+86 139 1234", email="li.lei.private@@example.com"),
        ]}
        headers = api.auth("loan-system") | idem()
        answer = await http.post("/v1/cases:batch", json=batch, headers=headers)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["results"]
        assert [(r["row"], r["outcome"]) for r in rows] == [
            (0, "already running"), (1, "started"), (2, "refused"), (3, "refused")]
        assert rows[2]["field"] == "loan_id" and "repeats row 1" in rows[2]["reason"]
        assert rows[3]["field"] == "phone" and "email:" in rows[3]["reason"]
        assert answer.json()["counts"] == {
            "started": 1, "already running": 1, "already closed": 0, "refused": 2}
        # Masked, never echoed: the reason carries no part of the address or the number.
        assert "li.lei.private" not in answer.text and "1391234" not in answer.text.replace(" ", "")

        again = await http.post("/v1/cases:batch", json=batch, headers=headers)
        assert again.status_code == 200
        assert again.content == answer.content
        assert again.headers["Idempotent-Replayed"] == "true"

    desc = await api.client.get_workflow_handle(workflow_id_for(fresh)).describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    audit = await pool.fetch(
        "SELECT principal, role, action, loan_id, outcome FROM api_audit "
        "WHERE idempotency_key = $1 ORDER BY id", headers["Idempotency-Key"])
    assert [(r["loan_id"], r["outcome"].split(":")[0]) for r in audit] == [
        (running, "already running"), (fresh, "started"), (fresh, "refused"), (bad, "refused")]
    assert {(r["principal"], r["role"], r["action"]) for r in audit} == {
        ("erp", "loan-system", "start_batch")}


async def test_payment_closes_the_case_once(api: Api, pool: asyncpg.Pool) -> None:
    loan_id = new_id()
    async with api.http() as http:
        started = await http.post("/v1/cases", json=loan_body(loan_id),
                                  headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        status = await eventually(
            lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
            lambda r: r.status_code == 200)
        assert status.json()["outstanding"] == "1200.00"

        payment = {"payment_id": f"P-{loan_id}", "amount": "1200.00", "currency": "CNY"}
        headers = api.auth("loan-system") | idem()
        url = f"/v1/cases/{loan_id}/payments"
        paid = await http.post(url, json=payment, headers=headers)
        assert paid.status_code == 200, paid.text
        assert (paid.json()["payment_id"], paid.json()["status"]) == (f"P-{loan_id}", "applied")

        repeat = await http.post(url, json=payment, headers=headers)
        assert (repeat.status_code, repeat.content) == (200, paid.content)
        assert repeat.headers["Idempotent-Replayed"] == "true"

        other = await http.post(url, json=payment | {"amount": "1.00"}, headers=headers)
        assert other.status_code == 409
        assert other.json()["kind"] == "idempotency_conflict"

        closed = await eventually(
            lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
            lambda r: r.json().get("state") == "paid", timeout=30)
        assert closed.json()["outstanding"] == "0.00"
    # The case is paid; its run ends once the receipt is out, inside the borrower's contact hours.
    row = await eventually(
        lambda: pool.fetchrow("SELECT state, outstanding FROM cases WHERE loan_id = $1", loan_id),
        lambda r: r is not None and r["state"] == "paid")
    assert row["outstanding"] == 0
    rows = await pool.fetch("SELECT payment_id, amount FROM payments WHERE loan_id = $1", loan_id)
    assert [(r["payment_id"], str(r["amount"])) for r in rows] == [(f"P-{loan_id}", "1200.00")]
    audit = await pool.fetchval(
        "SELECT count(*) FROM api_audit WHERE idempotency_key = $1", headers["Idempotency-Key"])
    assert audit == 1


async def test_close_then_pay_is_kept_unapplied(api: Api) -> None:
    loan_id = new_id()
    async with api.http() as http:
        started = await http.post("/v1/cases", json=loan_body(loan_id),
                                  headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        bad = await http.post(f"/v1/cases/{loan_id}/close", json={"reason": "abducted"},
                              headers=api.auth("loan-system") | idem())
        assert (bad.status_code, bad.json()["field"]) == (422, "reason")
        closed = await http.post(f"/v1/cases/{loan_id}/close", json={"reason": "sold"},
                                 headers=api.auth("loan-system") | idem())
        assert closed.status_code == 200, closed.text
        assert closed.json()["accepted"] is True
        async with asyncio.timeout(30):
            result = await api.client.get_workflow_handle(workflow_id_for(loan_id)).result()
        assert result["state"] == "closed"
        late = await http.post(f"/v1/cases/{loan_id}/payments",
                               json={"payment_id": "P-late", "amount": "1.00", "currency": "CNY"},
                               headers=api.auth("loan-system") | idem())
    # The money was received: kept unapplied with the reason (service.updates.pay), a problem
    # the loan system sees, never dropped.
    assert late.status_code == 422, late.text
    assert late.json()["kind"] == "refused"
    assert "P-late unapplied: case closed (closed)" in late.json()["detail"]
    assert late.headers["content-type"] == "application/problem+json"


async def test_bad_input_names_the_field_without_the_value(api: Api) -> None:
    async with api.http() as http:
        missing = await http.post("/v1/cases", json=loan_body(new_id()) | {"phone": 8613912345678},
                                  headers=api.auth("loan-system") | idem())
        assert missing.status_code == 422
        body = missing.json()
        assert (body["kind"], body["field"]) == ("bad_input", "phone")
        assert "8613912345678" not in missing.text

        bad = await http.post("/v1/cases", json=loan_body(new_id(), email="wang.secret@@x.com"),
                              headers=api.auth("loan-system") | idem())
        assert bad.status_code == 422
        assert bad.json()["field"] == "email" and "wang.secret" not in bad.text

        no_key = await http.post("/v1/cases", json=loan_body(new_id()),
                                 headers=api.auth("loan-system"))
        assert no_key.status_code == 422 and no_key.json()["field"] == "Idempotency-Key"

        unknown = await http.get("/v1/cases/NOPE-404", headers=api.auth("operator"))
        assert unknown.status_code == 404 and unknown.json()["kind"] == "not_found"
