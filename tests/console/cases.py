"""Cases for the console tests: real loans started on the console's worker, in a time zone
chosen so that the borrower's local time now is the hour a test needs."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from playwright.async_api import Page
from temporalio.client import Client

from contracts.messages import LoanInput
from service.cases import start_loan
from tests.helpers import eventually

CALL_SCREEN = re.compile(r"/console/call\?task=")


@dataclass(frozen=True)
class Console:
    url: str
    keys: dict[str, str]  # user -> secret
    client: Client  # the worker's, with the codec: starts cases as the loan system would
    task_queue: str


def zone_at_local_hour(hour: int) -> str:
    """An IANA zone (Etc/GMT±N) whose wall clock shows `hour` now."""
    now = datetime.now(UTC)
    offset = (hour - now.hour) % 24
    if offset > 14:
        offset -= 24
    # POSIX sign: Etc/GMT-8 is UTC+8.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def local_today(zone: str) -> date:
    return datetime.now(ZoneInfo(zone)).date()


def new_loan_id() -> str:
    return f"C{uuid.uuid4().hex[:10]}"


def loan(zone: str, *, due_in: int, us: bool = False, **overrides: Any) -> LoanInput:
    """A loan due `due_in` local days from today (negative: overdue)."""
    loan_id = new_loan_id()
    fields: dict[str, Any] = {
        "loan_id": loan_id, "borrower_name": "Wang Fang",
        "phone": "+12025550" + str(uuid.uuid4().int)[:3] if us
        else "+86139" + str(uuid.uuid4().int)[:8],
        "email": f"{loan_id.lower()}@example.com", "locale": "en" if us else "zh-CN",
        "timezone": zone, "currency": "USD" if us else "CNY",
        "amount_overdue": Decimal("1200.00"), "interest": Decimal("150.00"),
        "fees": Decimal("50.00"), "due_date": local_today(zone) + timedelta(days=due_in),
        "policy": "us_default" if us else None, "jurisdiction": "US" if us else "",
    }
    fields.update(overrides)
    return LoanInput(**fields)


async def open_call_task(console: Console, pool: asyncpg.Pool, *, us: bool = False) -> tuple[
        LoanInput, str]:
    """A case whose first call (D+4 at 11:00 local) is due now, in the afternoon at the
    borrower's: the workflow opens the call task at once."""
    zone = zone_at_local_hour(15)
    new = loan(zone, due_in=-4, us=us)
    assert await start_loan(console.client, new, task_queue=console.task_queue) == "started"
    key = await eventually(
        lambda: pool.fetchval("SELECT task_key FROM tasks WHERE loan_id = $1 AND status = 'open'",
                              new.loan_id),
        lambda k: k is not None, timeout=60)
    return new, str(key)


async def sign_in(page: Page, console: Console, user: str) -> None:
    await page.goto("/console/login")
    await page.fill("input[name=api_key]", console.keys[user])
    await page.click("#login button[type=submit]")
    await page.wait_for_load_state()
    assert "/console/login" not in page.url, await page.content()


def queue_row(page: Page, loan_id: str) -> Any:
    return page.locator(f"#queue tr[data-loan='{loan_id}']")


async def claim_and_verify(page: Page, loan_id: str) -> None:
    await page.goto("/console/queue")
    row = queue_row(page, loan_id)
    await row.locator("button.claim").click()
    await page.wait_for_url(CALL_SCREEN)
    for box in await page.locator("#verify input[type=checkbox]").all():
        await box.check()
    await page.click("#verify button[type=submit]")
    await page.wait_for_selector("#summary")
