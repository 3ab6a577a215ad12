"""The demo's outside world over HTTP: the loan system, an agent and an operator are API keys of
the running API (`python -m api.keys` wrote one per role into the demo's state folder), and the
provider emulator calls the API's webhooks signed as Twilio and SendGrid do.

Each call is one request a loan system or an agent console in any language would make; every
write carries an Idempotency-Key, so a retried request never acts twice.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from api.keys import KEY_FILE, Role
from contracts.messages import CaseStatus, LoanInput
from infra.emulator import twilio as twilio_emulator
from infra.webhook_keys import local_key_pair

_STATUS = TypeAdapter(CaseStatus)


class ApiRefused(Exception):
    """A problem document the API answered with: `kind` and `detail` as the API gave them."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('kind', '')}: {body.get('detail', '')}")
        self.status = status
        self.kind = str(body.get("kind", ""))


@dataclass(frozen=True)
class Keys:
    """One API key per role, as the local stack wrote them; `agent` is the agent's id."""

    secrets: dict[Role, str]
    agent: str

    @classmethod
    def read(cls, state_dir: Path) -> Keys:
        entries = json.loads((state_dir / KEY_FILE).read_text())["keys"]
        by_role = {Role(e["role"]): e for e in entries}
        return cls({role: e["key"] for role, e in by_role.items()}, by_role[Role.AGENT]["name"])


def loan_row(loan: LoanInput) -> dict[str, str]:
    """A loan as a loan system posts it: plain JSON, amounts as strings."""
    row = {"loan_id": loan.loan_id, "borrower_name": loan.borrower_name, "phone": loan.phone,
           "email": loan.email, "locale": loan.locale, "timezone": loan.timezone,
           "currency": loan.currency, "amount_overdue": str(loan.amount_overdue),
           "interest": str(loan.interest), "fees": str(loan.fees),
           "due_date": loan.due_date.isoformat(), "lender": loan.lender, "policy": loan.policy}
    return {k: v for k, v in row.items() if v}


class DemoApi:
    """The requests the demo makes, by who makes them."""

    def __init__(self, url: str, keys: Keys) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=60)
        self.keys = keys

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, role: Role,
                    body: dict[str, Any] | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys.secrets[role]}"}
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        r = await self.http.request(method, path, json=body, params=params or None,
                                    headers=headers)
        if r.status_code >= 400:
            raise ApiRefused(r.status_code, r.json() if r.content else {})
        return r.json()

    # --- the loan system
    async def start_batch(self, loans: list[LoanInput]) -> dict[str, int]:
        answer = await self._call("POST", "/v1/cases:batch", Role.LOAN_SYSTEM,
                                  {"loans": [loan_row(loan) for loan in loans]})
        return {k: v for k, v in answer["counts"].items() if v}

    async def pay(self, loan_id: str, payment_id: str, amount: Decimal, currency: str) -> str:
        """Report a payment; the case's answer (`applied`, `duplicate`)."""
        answer = await self._call("POST", f"/v1/cases/{loan_id}/payments", Role.LOAN_SYSTEM,
                                  {"payment_id": payment_id, "amount": str(amount),
                                   "currency": currency})
        return str(answer["message"])

    # --- an agent
    async def call_tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = await self._call("GET", "/v1/tasks", Role.AGENT,
                                                       kind="call", limit=100)
        return tasks

    async def work_task(self, task_key: str, loan_id: str, outcome: str) -> str:
        """Claim the task (a lease: no other agent works it meanwhile), report the call."""
        await self._call("POST", f"/v1/tasks/{task_key}/claim", Role.AGENT)
        answer = await self._call("POST", f"/v1/tasks/{task_key}/outcome", Role.AGENT,
                                  {"loan_id": loan_id, "outcome": outcome})
        return str(answer["message"])

    async def promise(self, loan_id: str, amount: Decimal, currency: str, by: date) -> str:
        answer = await self._call("POST", f"/v1/cases/{loan_id}/promise", Role.AGENT,
                                  {"amount": str(amount), "currency": currency,
                                   "date": by.isoformat()})
        return str(answer["message"])

    async def settle(self, loan_id: str, amount: Decimal, currency: str, pay_by: date) -> str:
        answer = await self._call("POST", f"/v1/cases/{loan_id}/settle", Role.AGENT,
                                  {"amount": str(amount), "currency": currency,
                                   "pay_by": pay_by.isoformat()})
        return str(answer["message"])

    # --- an operator
    async def status(self, loan_id: str) -> CaseStatus:
        return _STATUS.validate_python(
            await self._call("GET", f"/v1/cases/{loan_id}", Role.OPERATOR))


async def point_emulator_at(emulator_url: str, api_url: str, state_dir: Path) -> None:
    """Have the emulator call the API's webhooks (delivery reports, replies), signed with what
    the API checks: the emulator's Twilio auth token, the SendGrid key pair in `state_dir`."""
    async with httpx.AsyncClient(base_url=emulator_url, timeout=30) as http:
        r = await http.post("/_emulator/webhooks", json={
            "base_url": api_url, "twilio_auth_token": twilio_emulator.AUTH_TOKEN,
            "sendgrid_private_key_pem": local_key_pair(state_dir).private_pem.decode()})
        r.raise_for_status()


async def borrower_texts(emulator_url: str, phone: str, body: str) -> list[str]:
    """The borrower at `phone` texts `body` to the lender's number (through the emulator, which
    calls the inbound webhook); the answers Twilio sends back."""
    async with httpx.AsyncClient(base_url=emulator_url, timeout=30) as http:
        r = await http.post("/_emulator/twilio/inbound", json={"from": phone, "body": body})
        r.raise_for_status()
        return list(r.json().get("replies", []))
