"""What the API tests share: the running API as a test sees it, and request bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client


@dataclass(frozen=True)
class Api:
    url: str
    keys: dict[str, str]  # role -> secret
    client: Client        # the worker's, with the codec: reads what the API wrote
    log: Path

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60)


def loan_body(loan_id: str, **overrides: str) -> dict[str, Any]:
    due = (datetime.now(UTC) + timedelta(days=20)).date()
    body = {
        "loan_id": loan_id, "borrower_name": "Wang Fang", "phone": "+8613912345678",
        "email": f"{loan_id.lower()}@example.com", "locale": "zh-CN",
        "timezone": "Asia/Shanghai", "currency": "CNY", "amount_overdue": "1200.00",
        "interest": "150.00", "fees": "50.00", "due_date": due.isoformat(),
    }
    body.update(overrides)
    return body


def new_id() -> str:
    return f"H{uuid.uuid4().hex[:10]}"


def idem() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}
