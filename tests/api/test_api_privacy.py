"""A case opened over HTTP keeps the borrower's name, phone and e-mail out of Temporal's history
in plain text (the API's client encrypts every payload) and out of the API's log."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from contracts.names import workflow_id_for
from tests.api.calls import Api, idem, loan_body, new_id
from tests.helpers import eventually


async def test_history_of_a_case_started_over_http_holds_no_borrower_data(
        api: Api, dev_env: WorkflowEnvironment) -> None:
    loan_id = new_id()
    name, phone, email = "Zhao Xiaoming", "+8613800991234", f"zhao.{loan_id.lower()}@example.org"
    body = loan_body(loan_id, borrower_name=name, phone=phone, email=email)
    async with api.http() as http:
        started = await http.post("/v1/cases", json=body, headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        # Let the case open (its policy resolved, its first records written) before reading.
        await eventually(lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
                         lambda r: r.status_code == 200)
        history = await http.get(f"/v1/cases/{loan_id}/history", headers=api.auth("operator"))
        assert history.status_code == 200, history.text
    # A client without the codec sees what the server stores.
    raw = await dev_env.client.get_workflow_handle(workflow_id_for(loan_id)).fetch_history()
    text = raw.to_json()
    assert len(raw.events) > 3
    for secret in (name, phone, phone.removeprefix("+"), email, "Zhao"):
        assert secret not in text
    log = api.log.read_text()
    for secret in (name, phone, email):
        assert secret not in log
