"""The outside world of the soak, through the HTTP API only: the loan system opening cases in
batches and reporting payments, and an agent reporting call and visit outcomes.

Every write carries an Idempotency-Key and is retried with the same key while the API cannot
answer (503 while PostgreSQL or Temporal is down, a dropped connection); what each report got
back is written to the run log, which is what the reconciler calls "reported".

Each loan follows a script drawn at the start: paid in full (a few reported twice, with a new
key, as a loan system resending would), paid in part once or twice, paid in the wrong currency
first (kept unapplied), paid after it was written off (kept as excess while the case's workflow
runs, unapplied "case closed" once it has ended), or left unpaid to escalate to write-off.
The agent calls inside the borrower's window: the case's clock is compressed, so it picks an
allowed period from the task and gives the instant of the call in real time (`at`), as a dialer
that logged the call would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

DAY = 86400
US_ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
NAMES = ["Li Lei", "Han Meimei", "Wang Fang", "Zhang Wei", "Liu Yang", "Chen Jing",
         "Emily Carter", "James Brown", "Zhao Min", "Sun Li"]
GIVE_UP_SECONDS = 600.0
AGENT_BATCH = 40  # tasks the agent looks at per round
AGENT_TASK_SECONDS = 90.0  # one task's reads and outcome, at most
PLANS = (["full"] * 30 + ["full_twice"] * 5 + ["part"] * 15 + ["part_twice"] * 5
         + ["wrong_currency"] * 5 + ["after_write_off"] * 5 + ["unpaid"] * 35)


@dataclass
class Script:
    loan: dict[str, Any]  # the API's loan body
    plan: str
    pay_day: float  # policy days after the case opened
    started_at: float | None = None  # loop time the case was started
    paid: Decimal = Decimal("0")
    done: set[str] = field(default_factory=set)

    @property
    def loan_id(self) -> str:
        return str(self.loan["loan_id"])

    @property
    def amount(self) -> Decimal:
        return Decimal(self.loan["amount_overdue"])


def make_loans(rng: random.Random, n: int, run: str, today: date) -> list[Script]:
    """`n` loans under the demo policy: three in four in China (CNY, the `cn` rules), the rest
    in the US (USD, the `us` rules); about one borrower in twenty has two loans."""
    scripts: list[Script] = []
    i = 0
    while len(scripts) < n:
        i += 1
        us = rng.random() < 0.25
        phone = (f"+1202555{rng.randint(1000, 9999)}" if us
                 else f"+86138{rng.randint(10_000_000, 99_999_999)}")
        borrower = f"B-{run}-{i:05d}"
        for _ in range(2 if rng.random() < 0.05 and len(scripts) < n - 1 else 1):
            k = len(scripts) + 1
            amount = Decimal(rng.choice([800, 1500, 3200, 6500, 12000])) + Decimal(
                rng.randint(0, 99)) / 100
            loan = {
                "loan_id": f"SOAK-{run}-{k:05d}", "borrower_name": NAMES[k % len(NAMES)],
                "phone": phone, "email": f"soak{run.lower()}{k}@example.com",
                "locale": "en" if us or k % 4 == 3 else "zh-CN",
                "timezone": rng.choice(US_ZONES) if us else "Asia/Shanghai",
                "currency": "USD" if us else "CNY", "amount_overdue": str(amount),
                "interest": str((amount * Decimal("0.08")).quantize(Decimal("0.01"))),
                "fees": "25.00", "due_date": (today - timedelta(days=rng.choice([0, 1, 2])))
                .isoformat(), "borrower_id": borrower, "lender": "Soak Consumer Finance",
                "policy": "demo",
            }
            plan = rng.choice(PLANS)
            scripts.append(Script(loan, plan, rng.uniform(2, 8)))
    return scripts


def _problem_kind(resp: httpx.Response) -> str | None:
    if not resp.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        kind = resp.json().get("kind")
    except ValueError:
        return None
    return str(kind) if kind else None


@dataclass
class Api:
    url: str
    keys: dict[str, str]
    http: httpx.AsyncClient = field(init=False)
    retries: int = 0

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(base_url=self.url, timeout=60,
                                      limits=httpx.Limits(max_connections=40))

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    async def write(self, role: str, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST with one Idempotency-Key, retried until the API answers (None: it never did)."""
        headers = {**self.auth(role), "Idempotency-Key": str(uuid.uuid4())}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + GIVE_UP_SECONDS
        wait = 0.5
        while True:
            try:
                resp = await self.http.post(path, json=body, headers=headers)
                kind = _problem_kind(resp)
                if resp.status_code == 409 and kind == "conflict":
                    headers["Idempotency-Key"] = str(uuid.uuid4())  # "try again": anew
                elif resp.status_code == 409 and "still being carried out" in resp.text:
                    pass  # the first request with this key is under way: ask again
                elif resp.status_code not in (429, 500, 502, 503, 504):
                    return resp
            except httpx.HTTPError:
                pass
            if loop.time() > give_up:
                return None
            self.retries += 1
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 5)

    async def read(self, role: str, path: str, **params: Any) -> Any:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while True:
            try:
                resp = await self.http.get(path, params=params, headers=self.auth(role))
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code in (404, 410):
                    return None
            except httpx.HTTPError:
                pass
            if loop.time() > give_up:
                return None
            await asyncio.sleep(1)

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class World:
    api: Api
    scripts: list[Script]
    rng: random.Random
    day_seconds: int
    payments: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    started: dict[str, str] = field(default_factory=dict)  # loan id -> start outcome
    origins: dict[str, datetime] = field(default_factory=dict)
    handled_tasks: set[str] = field(default_factory=set)
    _agent_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))

    # ------------------------------------------------------------------ loan system
    async def open_cases(self, within: float, batch: int = 25) -> None:
        """Every loan opened, in batches spread evenly over `within` seconds."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        chunks = [self.scripts[i:i + batch] for i in range(0, len(self.scripts), batch)]
        for n, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, t0 + within * n / len(chunks) - loop.time()))
            resp = await self.api.write("loan-system", "/v1/cases:batch",
                                        {"loans": [s.loan for s in chunk]})
            now = loop.time()
            answers = {r["loan_id"]: r["outcome"] for r in resp.json()["results"]} if (
                resp is not None and resp.status_code == 200) else {}
            for s in chunk:
                self.started[s.loan_id] = answers.get(s.loan_id, "no answer")
                s.started_at = now

    async def _pay(self, s: Script, payment_id: str, amount: Decimal, currency: str) -> str | None:
        resp = await self.api.write("loan-system", f"/v1/cases/{s.loan_id}/payments",
                                    {"payment_id": payment_id, "amount": str(amount),
                                     "currency": currency})
        answer: str | None = None
        if resp is not None:
            kind = _problem_kind(resp)
            try:
                answer = str(kind if kind and kind != "refused" else resp.json().get("status")
                             or resp.status_code)
            except ValueError:
                answer = str(resp.status_code)
        self.payments.append({"loan_id": s.loan_id, "payment_id": payment_id,
                              "amount": str(amount), "currency": currency, "answer": answer,
                              "http": resp.status_code if resp is not None else None})
        if answer == "applied" and currency == s.loan["currency"]:
            s.paid += amount
        return answer

    async def play_payments(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = []
            for s in self.scripts:
                if s.started_at is None or self.started.get(s.loan_id) != "started":
                    continue
                day = (loop.time() - s.started_at) / self.day_seconds
                step = self._next_payment(s, day)
                if step is not None:
                    due.append((s, step))
            await asyncio.gather(*(self._payment(s, step) for s, step in due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)

    def _next_payment(self, s: Script, day: float) -> str | None:
        plan, done = s.plan, s.done
        if plan in ("full", "full_twice") and day > s.pay_day and "full" not in done:
            return "full"
        if plan == "full_twice" and day > s.pay_day + 1 and "full" in done and "again" not in done:
            return "again"
        if plan in ("part", "part_twice") and day > s.pay_day and "part1" not in done:
            return "part1"
        if plan == "part_twice" and day > s.pay_day + 4 and "part2" not in done:
            return "part2"
        if plan == "wrong_currency" and day > s.pay_day and "wrong" not in done:
            return "wrong"
        if plan == "wrong_currency" and day > s.pay_day + 2 and "right" not in done:
            return "right"
        if plan == "after_write_off" and day > 36 and "late" not in done:
            return "late"
        return None

    async def _payment(self, s: Script, step: str) -> None:
        s.done.add(step)
        cur = str(s.loan["currency"])
        third = (s.amount / 3).quantize(Decimal("0.01"))
        if step == "full":
            await self._pay(s, f"{s.loan_id}-P1", s.amount - s.paid, cur)
        elif step == "again":  # the loan system resends the same payment, with a new key
            first = next(p for p in self.payments if p["payment_id"] == f"{s.loan_id}-P1")
            await self._pay(s, f"{s.loan_id}-P1", Decimal(first["amount"]), cur)
        elif step == "part1":
            await self._pay(s, f"{s.loan_id}-P1", third, cur)
        elif step == "part2":
            await self._pay(s, f"{s.loan_id}-P2", third, cur)
        elif step == "wrong":
            await self._pay(s, f"{s.loan_id}-W1", third, "USD" if cur == "CNY" else "CNY")
        elif step == "right":
            await self._pay(s, f"{s.loan_id}-R1", third, cur)
        elif step == "late":
            await self._pay(s, f"{s.loan_id}-L1", Decimal("100.00"), cur)

    # ---------------------------------------------------------------------- agent
    async def play_agent(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for kind in ("call", "visit"):
                tasks = await self.api.read("agent", "/v1/tasks", kind=kind, limit=500) or []
                todo = [t for t in tasks if t["task_key"] not in self.handled_tasks]
                # A few at a time, each bounded: a slow read under load must not hold up the
                # whole queue (nor take every connection the loan system's calls share).
                await asyncio.gather(*(self._bounded(t) for t in todo[:AGENT_BATCH]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2)

    async def _bounded(self, task: dict[str, Any]) -> None:
        async with self._agent_slots:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work(task), AGENT_TASK_SECONDS)

    async def _origin(self, loan_id: str) -> datetime | None:
        """When the case opened: where its compressed clock meets real time."""
        if loan_id not in self.origins:
            timeline = await self.api.read("operator", f"/v1/cases/{loan_id}/timeline")
            opened = [e for e in timeline or [] if e.get("kind") == "case_opened"]
            if not opened:
                return None
            self.origins[loan_id] = datetime.fromisoformat(opened[0]["at"])
        return self.origins[loan_id]

    def _call_time(self, task: dict[str, Any], origin: datetime) -> datetime | None:
        """A real instant whose policy time lies well inside an allowed period already past,
        or None if no such period has come yet."""
        now = datetime.now(UTC)
        scale = DAY / self.day_seconds
        policy_now = origin + (now - origin) * scale
        for start_s, end_s in task.get("work_windows") or []:
            start, end = datetime.fromisoformat(start_s), datetime.fromisoformat(end_s)
            end = min(end, policy_now)
            if end - start < timedelta(hours=3):
                continue
            lo, hi = start + timedelta(hours=1), end - timedelta(hours=1)
            policy_at = lo + (hi - lo) * self.rng.random()
            return origin + (policy_at - origin) / scale
        return None

    async def _work(self, task: dict[str, Any]) -> None:
        key, loan_id = task["task_key"], task["loan_id"]
        if self.rng.random() < 0.3:  # this one the agents never get to: its deadline passes
            self.handled_tasks.add(key)
            return
        origin = await self._origin(loan_id)
        if origin is None:
            return
        at = self._call_time(task, origin)
        if at is None:
            return  # no allowed period has passed yet: later
        self.handled_tasks.add(key)
        outcome = (self.rng.choice(["reached", "no_answer", "no_answer", "refused"])
                   if task["kind"] == "call" else self.rng.choice(["visited",
                                                                   "borrower_not_found"]))
        resp = await self.api.write("agent", f"/v1/tasks/{key}/outcome",
                                    {"loan_id": loan_id, "outcome": outcome,
                                     "at": at.isoformat()})
        accepted = False
        if resp is not None and resp.status_code == 200:
            accepted = bool(resp.json().get("accepted"))
        self.outcomes.append({"task_key": key, "loan_id": loan_id, "outcome": outcome,
                              "accepted": accepted,
                              "http": resp.status_code if resp is not None else None,
                              "detail": (resp.text[:200] if resp is not None
                                         and resp.status_code != 200 else "")})
