"""A deletion request over HTTP (issue 18): a loan system opens two loans of one borrower through
the API (which keeps the borrower in the vault: the case's input holds a reference only); the
operator's `POST /v1/erasures` is 409 with the reason while a case is open, 200 once both have
ended, and `GET /v1/erasures` shows the audit. Agents and loan systems may not erase."""

from __future__ import annotations

import asyncio

from contracts.messages import PERSONAL_FIELDS
from contracts.names import workflow_id_for
from service.contact_window import borrower
from tests.api.calls import Api, idem, loan_body, new_id


async def test_erasure_is_409_while_open_then_erases_both_loans(api: Api) -> None:
    borrower_id = f"B-{new_id()}"
    loans = [new_id(), new_id()]
    async with api.http() as http:
        for loan_id in loans:
            started = await http.post("/v1/cases", json=loan_body(loan_id, borrower_id=borrower_id),
                                      headers=api.auth("loan-system") | idem())
            assert started.status_code == 200, started.text
        # The case holds a reference, not the borrower.
        shaped = await borrower(api.client, loans[0])
        assert shaped.borrower_ref and all(getattr(shaped, f) == "" for f in PERSONAL_FIELDS)

        request = {"borrower_id": borrower_id, "reason": "deletion request 2026-881"}
        denied = await http.post("/v1/erasures", json=request,
                                 headers=api.auth("agent") | idem())
        assert denied.status_code == 403, denied.text
        refused = await http.post("/v1/erasures", json=request,
                                  headers=api.auth("operator") | idem())
        assert refused.status_code == 409, refused.text
        assert refused.json()["kind"] == "refused" and "open cases" in refused.json()["detail"]

        for loan_id in loans:
            closed = await http.post(f"/v1/cases/{loan_id}/close", json={"reason": "sold"},
                                     headers=api.auth("loan-system") | idem())
            assert closed.status_code == 200, closed.text
            async with asyncio.timeout(30):
                await api.client.get_workflow_handle(workflow_id_for(loan_id)).result()
        headers = api.auth("operator") | idem()
        done = await http.post("/v1/erasures", json=request, headers=headers)
        assert done.status_code == 200, done.text
        assert sorted(done.json()["loan_ids"]) == sorted(loans)
        again = await http.post("/v1/erasures", json=request, headers=headers)
        assert again.headers.get("Idempotent-Replayed") == "true"

        audit = await http.get("/v1/erasures", params={"loan_id": loans[0]},
                               headers=api.auth("operator"))
        assert audit.status_code == 200, audit.text
        [entry] = audit.json()
        assert entry["kind"] == "erasure" and entry["actor"] == "ops"
        assert entry["borrower_id"] == borrower_id and "Wang Fang" not in audit.text
        status = await http.get(f"/v1/cases/{loans[0]}", headers=api.auth("operator"))
        assert status.status_code == 200 and status.json()["state"] == "closed"
