"""What every benchmark's body shares: paths, task queues, log lines, loans and policies, small
async helpers. The rest lives by idea: `bench.stack` (servers and worker processes),
`bench.measure` (percentiles, RSS/CPU sampling, history shapes), `bench.report` (tables,
latest.json, and `run`, every benchmark's entry point).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from temporalio.client import Client

    from contracts.messages import LoanInput
    from contracts.policy import ResolvedPolicy, Step

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOCAL_TZ = "Asia/Shanghai"  # the borrower zone of every benchmark loan
BARE_QUEUE = "bench-bare"
OUR_QUEUE = "bench-collections"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def local_today() -> date:
    return datetime.now(ZoneInfo(LOCAL_TZ)).date()


def make_loan(loan_id: str, due: date, i: int, **overrides: Any) -> LoanInput:
    """A benchmark loan; give each loan of a run its own `i` (its phone number: caps count per
    phone)."""
    from contracts.messages import LoanInput

    fields: dict[str, Any] = {
        "loan_id": loan_id,
        "borrower_name": "Li Lei",
        "phone": f"+86139{i % 100_000_000:08d}",
        "email": f"{loan_id.lower()}@example.com",
        "locale": "en",
        "timezone": LOCAL_TZ,
        "currency": "CNY",
        "amount_overdue": Decimal("1200.00"),
        "interest": Decimal("150.00"),
        "fees": Decimal("50.00"),
        "due_date": due,
    }
    fields.update(overrides)
    return LoanInput(**fields)


def random_ids(ids: Sequence[str], k: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ids) for _ in range(k)]


def pinned_policy(loan: LoanInput, *, day_seconds: int | None = None,
                  steps: list[Step] | None = None, open_window: bool = False) -> ResolvedPolicy:
    """The policy `loan` resolves to, with a compressed clock, another ladder, a 24-hour window."""
    from datetime import time as dtime

    from activities.policies import resolve

    policy = resolve(loan)
    update: dict[str, Any] = {}
    if day_seconds is not None:
        update["settings"] = policy.settings.model_copy(update={"day_seconds": day_seconds})
    if steps is not None:
        update["steps"] = steps
    if open_window:
        update["rule_pack"] = policy.rule_pack.model_copy(update={
            "window_start": dtime(0, 0), "window_end": dtime(23, 59, 59), "quiet_weekdays": [],
            "quiet_dates": []})
    return policy.model_copy(update=update) if update else policy


def utcnow() -> datetime:
    return datetime.now(UTC)


async def gather_bounded(coros: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


async def start_bare(client: Client, ids: Sequence[str], wait: Any) -> None:
    """Start one `BareWorkflow` (the baseline) per id on BARE_QUEUE, 200 requests at a time."""
    from bench.bare import BareWorkflow

    for batch in chunks(ids, 200):
        await asyncio.gather(*(
            client.start_workflow(BareWorkflow.run, wait, id=wid, task_queue=BARE_QUEUE)
            for wid in batch))


def base_parser(description: str, n: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, default=n, help=f"workflows per side (default {n})")
    p.add_argument("--no-write", action="store_true",
            help="do not merge into bench/results/latest.json")
    return p
