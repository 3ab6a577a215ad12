"""A collection agency over HTTP (issue 19): it sees the cases placed with it and no other
agency's (403), reports a payment that applies once however often it is sent, and a contact made
outside the borrower's window is recorded as a breach. Operators place, recall and read the
report per agency."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx

from tests.api.calls import Api, idem, loan_body, new_id
from tests.api.conftest import AGENCY_ID
from tests.helpers import eventually

ZONES = ("Pacific/Kiritimati", "Pacific/Auckland", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata",
         "Europe/Moscow", "Europe/Berlin", "Europe/London", "America/Sao_Paulo",
         "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "Pacific/Honolulu")


def _night_zone() -> str:
    """A time zone where it is the small hours now (outside every window), for a breach."""
    now = datetime.now(UTC)
    return next(z for z in ZONES if 0 <= now.astimezone(ZoneInfo(z)).hour < 5)


async def _open(http: httpx.AsyncClient, api: Api, **overrides: str) -> str:
    loan_id = new_id()
    started = await http.post("/v1/cases", json=loan_body(loan_id, **overrides),
                              headers=api.auth("loan-system") | idem())
    assert started.status_code == 200, started.text
    await eventually(lambda: http.get(f"/v1/cases/{loan_id}", headers=api.auth("operator")),
                     lambda r: r.status_code == 200)
    return loan_id


async def _place(http: httpx.AsyncClient, api: Api, loan_id: str, agency_id: str) -> None:
    placed = await http.post(f"/v1/cases/{loan_id}/place", json={"agency_id": agency_id},
                             headers=api.auth("operator") | idem())
    assert placed.status_code == 200, placed.text
    assert agency_id in placed.json()["message"]


async def test_agency_sees_its_case_pays_once_and_breaches_are_recorded(api: Api) -> None:
    async with api.http() as http:
        mine = await _open(http, api, timezone=_night_zone())
        theirs = await _open(http, api)
        await _place(http, api, mine, AGENCY_ID)
        await _place(http, api, theirs, "dongfang")

        listed = await eventually(
            lambda: http.get("/v1/agency/cases", headers=api.auth("agency")),
            lambda r: mine in [c["loan_id"] for c in r.json()])
        assert theirs not in [c["loan_id"] for c in listed.json()]
        seen = await http.get(f"/v1/agency/cases/{mine}", headers=api.auth("agency"))
        assert seen.status_code == 200, seen.text
        body = seen.json()
        assert body["outstanding"] == "1200.00" and body["borrower"]["phone"] == "+8613912345678"
        assert [e["kind"] for e in body["history"]][:1] == ["placed"]
        other = await http.get(f"/v1/agency/cases/{theirs}", headers=api.auth("agency"))
        assert other.status_code == 403, other.text
        paid_elsewhere = await http.post(
            f"/v1/agency/cases/{theirs}/payments",
            json={"payment_id": "X1", "amount": "10.00", "currency": "CNY"},
            headers=api.auth("agency") | idem())
        assert paid_elsewhere.status_code == 403
        # Only agencies call the agency endpoints.
        assert (await http.get("/v1/agency/cases", headers=api.auth("agent"))).status_code == 403

        payment = {"payment_id": f"AG-{mine}", "amount": "200.00", "currency": "CNY"}
        first = await http.post(f"/v1/agency/cases/{mine}/payments", json=payment,
                                headers=api.auth("agency") | idem())
        again = await http.post(f"/v1/agency/cases/{mine}/payments", json=payment,
                                headers=api.auth("agency") | idem())  # a new key: a real resend
        assert (first.json()["status"], again.json()["status"]) == ("applied", "duplicate")
        assert again.json()["outstanding"] == "1000.00"

        call = await http.post(
            f"/v1/agency/cases/{mine}/contacts",
            json={"channel": "call", "outcome": "no_answer",
                  "at": datetime.now(UTC).isoformat()},
            headers=api.auth("agency") | idem())
        assert call.status_code == 200, call.text
        assert call.json()["breach"] is True, call.json()
        status = (await http.get(f"/v1/cases/{mine}", headers=api.auth("operator"))).json()
        assert status["breaches"] == 1 and status["placed_with"] == AGENCY_ID

        recalled = await http.post(f"/v1/cases/{mine}/recall", json={"reason": "review"},
                                   headers=api.auth("operator") | idem())
        assert recalled.status_code == 200, recalled.text
        assert (await http.get(f"/v1/agency/cases/{mine}",
                               headers=api.auth("agency"))).status_code == 403

        report = await eventually(
            lambda: http.get("/v1/agency-report", headers=api.auth("operator")),
            lambda r: any(a["agency_id"] == AGENCY_ID and a["breaches"] >= 1
                          for a in r.json()["agencies"]))
        row = next(a for a in report.json()["agencies"]
                   if a["agency_id"] == AGENCY_ID and a["currency"] == "CNY")
        assert row["cases_placed"] >= 1 and row["recovered"] != "0.00"
        for theirs_id in (theirs,):
            await http.post(f"/v1/cases/{theirs_id}/recall", json={},
                            headers=api.auth("operator") | idem())
