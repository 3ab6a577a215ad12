"""`/metrics` counts what the test did: a case opened, a payment applied and its amount, a payment
in another currency left unapplied (answered 422 with the reason), a refused webhook call, each
request under its route's template; and the worker serves the SDK's own metrics."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.endpoints import free_port
from tests.api.calls import Api, idem, loan_body, new_id
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient, path: str = "/metrics") -> Samples:
    answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_what_the_test_did(api: Api) -> None:
    loan_id = new_id()
    async with api.http() as http:
        before = await scrape(http)
        assert value(before, "collections_database_up") == 1.0
        started = await http.post("/v1/cases", json=loan_body(loan_id),
                                  headers=api.auth("loan-system") | idem())
        assert started.status_code == 200, started.text
        await eventually(lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
                         lambda r: r.status_code == 200)
        url = f"/v1/cases/{loan_id}/payments"
        payment = {"payment_id": f"P-{loan_id}-1", "amount": "200.00", "currency": "CNY"}
        paid = await http.post(url, json=payment, headers=api.auth("loan-system") | idem())
        assert paid.status_code == 200, paid.text
        assert (paid.json()["status"], paid.json()["outstanding"]) == ("applied", "1000.00")
        again = await http.post(url, json=payment, headers=api.auth("loan-system") | idem())
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate"
        dollars = await http.post(url, json={"payment_id": f"P-{loan_id}-2", "amount": "5.00",
                                             "currency": "USD"},
                                  headers=api.auth("loan-system") | idem())
        assert dollars.status_code == 422, dollars.text
        assert dollars.headers["content-type"] == "application/problem+json"
        problem = dollars.json()
        assert problem["kind"] == "refused"
        assert problem["detail"].startswith(f"payment P-{loan_id}-2 unapplied: ")
        unsigned = await http.post("/webhooks/twilio/status",
                                   data={"MessageSid": "SM1", "MessageStatus": "delivered"})
        assert unsigned.status_code in (401, 403), unsigned.text

        def counted(after: Samples) -> bool:
            return (value(after, "collections_payments_total", currency="CNY")
                    >= value(before, "collections_payments_total", currency="CNY") + 1
                    and value(after, "collections_unapplied_payments_total", currency="USD")
                    >= value(before, "collections_unapplied_payments_total", currency="USD") + 1)

        after = await eventually(lambda: scrape(http), counted)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("collections_cases_opened_total") == 1
    assert delta("collections_cases", state="active") == 1
    assert delta("collections_payments_total", currency="CNY") == 1
    assert delta("collections_collected_amount_total", currency="CNY") == 200.0
    assert delta("collections_unapplied_payments_total", currency="USD") == 1
    route = "/v1/cases/{loan_id}/payments"
    assert delta("collections_api_requests_total", method="POST", route=route, status="200") == 2
    assert delta("collections_api_requests_total", method="POST", route=route, status="422") == 1
    assert delta("collections_webhook_calls_total", route="/webhooks/twilio/status",
                 outcome="refused") == 1
    # No borrower data in any label: routes are templates, never the paths called.
    assert not any(loan_id in v for _, labels in after for _, v in labels)


async def test_the_worker_serves_the_sdks_metrics(tmp_path: Path) -> None:
    """`METRICS_PORT` turns on the temporalio runtime's Prometheus endpoint (no stack needed:
    the runtime serves before any client connects)."""
    port = free_port()
    code = ("import sys, time, worker; print(worker.serve_sdk_metrics(sys.argv[1]), flush=True);"
            "from temporalio.runtime import Runtime; Runtime.default(); time.sleep(30)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, f"127.0.0.1:{port}",
                                                cwd=ROOT, env=dict(os.environ))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            async def get() -> httpx.Response | None:
                try:
                    return await http.get("/metrics")
                except httpx.TransportError:
                    return None
            answer = await eventually(get, lambda r: r is not None and r.status_code == 200,
                                      timeout=20)
        assert answer is not None
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
