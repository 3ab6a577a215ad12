"""The HTTP API against the service layer it wraps, in the same run, on the same stack.

One stack (PostgreSQL, the emulator, the dev server with an SQLite file), our worker
(`python worker.py`) and the API (`python -m api`, its own process, the worker's environment);
the direct side calls `service/` from this process with the same environment (`Connections`, as
the CLI does). Three figures:

- batch start: N loans, half through `POST /v1/cases:batch` (rows of `--batch` loans a request),
  half through `service.cases.start_many`, in ABBA order (direct, API, API, direct; N/4 each)
  so that neither side profits from a smaller database; no worker runs meanwhile (starting is
  measured, as in bench.start_rate), then the worker opens all N cases (due 60 days out: they
  sleep until D-3);
- payment rate at N open cases: `--payments` payments of 1.00 CNY to random cases, `--concurrency`
  in flight, through `POST /v1/cases/{id}/payments` and through `service.updates.pay` (the function
  the route calls), ABBA again; each is answered `applied` by the case;
- payment visible in status: one at a time, from sending the payment over HTTP until
  `GET /v1/cases/{id}` shows it (p50/p99 over `--samples`).

    python -m bench.api_rates --n 10000
    python -m bench.api_rates --n 2000 --payments 1000     # a busy machine
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal

import httpx

from bench.common import OUR_QUEUE, base_parser, chunks, gather_bounded, local_today, log, make_loan
from bench.measure import Sampler, ms_summary, timed_samples
from bench.report import Report, load_now, run
from bench.stack import PYTHON, Proc, Stack
from infra.endpoints import free_port

RATIO_TARGET = 0.8
P99_TARGET_MS = 500
LOAN_SYSTEM, OPERATOR = "bench-erp", "bench-ops"


def loan_row(loan_id: str, due: date, i: int) -> dict[str, str]:
    """The benchmark loan (bench.common.make_loan) as a loan system posts it."""
    loan = make_loan(loan_id, due, i)
    return {"loan_id": loan.loan_id, "borrower_name": loan.borrower_name, "phone": loan.phone,
            "email": loan.email, "locale": loan.locale, "timezone": loan.timezone,
            "currency": loan.currency, "amount_overdue": str(loan.amount_overdue),
            "interest": str(loan.interest), "fees": str(loan.fees),
            "due_date": loan.due_date.isoformat()}


class Api:
    """The API process and an HTTP client holding one key per role it needs."""

    def __init__(self, st: Stack, concurrency: int) -> None:
        self.secrets = {role: secrets.token_urlsafe(24) for role in ("loan-system", "operator")}
        self.port = free_port()
        self.env = service_env(st) | {
            "API_HOST": "127.0.0.1", "API_PORT": str(self.port),
            "API_KEYS": f"{LOAN_SYSTEM}=loan-system:{self.secrets['loan-system']},"
                        f"{OPERATOR}=operator:{self.secrets['operator']}"}
        # This process's environment holds the service's already (main), as the worker's does.
        self.proc = Proc("api", [PYTHON, "-m", "api"], {**os.environ, **self.env},
                         st.dir / "api.log", "Application startup complete")
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", timeout=300,
            limits=httpx.Limits(max_connections=concurrency + 2,
                                max_keepalive_connections=concurrency + 2))

    def headers(self, role: str, write: bool = True) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.secrets[role]}"}
        return h | {"Idempotency-Key": secrets.token_hex(16)} if write else h

    async def start_batch(self, rows: Sequence[dict[str, str]]) -> Counter[str]:
        r = await self.http.post("/v1/cases:batch", json={"loans": list(rows)},
                                 headers=self.headers("loan-system"))
        r.raise_for_status()
        return Counter({k: v for k, v in r.json()["counts"].items() if v})

    async def pay(self, loan_id: str, payment_id: str) -> str:
        r = await self.http.post(f"/v1/cases/{loan_id}/payments",
                                 json={"payment_id": payment_id, "amount": "1.00",
                                       "currency": "CNY"},
                                 headers=self.headers("loan-system"))
        r.raise_for_status()
        return str(r.json()["status"])

    async def paid_total(self, loan_id: str) -> Decimal:
        r = await self.http.get(f"/v1/cases/{loan_id}", headers=self.headers("operator", False))
        r.raise_for_status()
        return Decimal(r.json()["paid_total"])


def service_env(st: Stack) -> dict[str, str]:
    """What both sides are configured with: the worker's Temporal, PostgreSQL, task queue and
    encryption keys (so the API and `service/` write the same encrypted inputs)."""
    assert st.address and st.dsn and st.keys
    return {"TEMPORAL_ADDRESS": st.address, "TEMPORAL_NAMESPACE": "default",
            "DATABASE_URL": st.dsn, "TASK_QUEUE": OUR_QUEUE,
            "COLLECTIONS_ENCRYPTION_KEYS": st.keys, "STATE_DIR": str(st.dir / "service-state")}


async def abba(sides: dict[str, Callable[[int, int], Awaitable[None]]], n: int) -> dict[str, float]:
    """Run `sides["direct"]` and `sides["api"]` on n/4 items each round, direct-api-api-direct;
    seconds per side. `fn(round, k)` does k items."""
    quarters = [n // 4, n // 4, n // 4, n - 3 * (n // 4)]
    secs = {"direct": 0.0, "api": 0.0}
    for rnd, side in enumerate(("direct", "api", "api", "direct")):
        t0 = time.perf_counter()
        await sides[side](rnd, quarters[rnd])
        dt = time.perf_counter() - t0
        secs[side] += dt
        log(f"  round {rnd + 1}/4 {side}: {quarters[rnd]} in {dt:.2f}s = "
            f"{quarters[rnd] / dt:.0f}/s")
    return secs


async def main(args: argparse.Namespace) -> Report:
    n, payments = args.n, args.payments
    report = Report("api_rates", params={
        "n": n, "batch_rows": args.batch, "payments": payments, "concurrency": args.concurrency,
        "samples": args.samples, "order": "ABBA", "workers while starting": "none"})
    report.load_before = load_now()
    async with Stack(pool_size=args.concurrency + 5) as st:
        os.environ.update(service_env(st))  # the direct side: `service/` as the CLI runs it
        from contracts.messages import PaymentInput, PaymentStatus
        from service import cases, updates
        from service.connection import Connections

        conns = Connections()
        api = Api(st, args.concurrency)
        try:
            client, pool, vault = await conns.temporal(), await conns.pool(), await conns.vault()
            with Sampler() as s:
                s.add("server", st.server_ps.pid)
                s.add("client", os.getpid())
                s.add("api", (await api.proc.start()).pid)
                # ------------------------------------------------------------ batch start
                due = local_today() + timedelta(days=60)
                ids: list[str] = []
                started: Counter[str] = Counter()

                async def start_direct(rnd: int, k: int) -> None:
                    loans = [make_loan(f"AR{rnd}-{i:06d}", due, rnd * n + i) for i in range(k)]
                    got = await cases.start_many(client, loans, task_queue=OUR_QUEUE, vault=vault)
                    started.update({f"direct {o}": c for o, c in got.items() if c})
                    ids.extend(loan.loan_id for loan in loans)

                async def start_api(rnd: int, k: int) -> None:
                    rows = [loan_row(f"AR{rnd}-{i:06d}", due, rnd * n + i) for i in range(k)]
                    for batch in chunks(rows, args.batch):
                        got = await api.start_batch(batch)
                        started.update({f"api {o}": c for o, c in got.items()})
                    ids.extend(r["loan_id"] for r in rows)

                # Warm both sides up (the API connects to Temporal on its first request).
                await api.start_batch([loan_row("ARW-api", due, 10 * n)])
                await cases.start_many(client, [make_loan("ARW-direct", due, 10 * n + 1)],
                                       task_queue=OUR_QUEUE, vault=vault)
                log(f"batch start: {n} loans, ABBA, no worker running")
                start_secs = await abba({"direct": start_direct, "api": start_api}, n)
                halves = {"direct": n // 4 + (n - 3 * (n // 4)), "api": 2 * (n // 4)}
                start_rate = {k: halves[k] / start_secs[k] for k in halves}
                # ------------------------------------------------------------ open cases
                s.add("worker", (await st.start_our_worker()).pid)
                t0 = time.perf_counter()

                async def all_recorded() -> bool:
                    return await st.pool.fetchval("SELECT count(*) FROM cases") >= n + 2

                await s.wait_idle("worker", timeout=args.settle_timeout, check=all_recorded)
                opened = await st.pool.fetchval("SELECT count(*) FROM cases") - 2  # warm-ups
                log(f"{opened} cases open after {time.perf_counter() - t0:.0f}s")
                # ------------------------------------------------------------ payments
                rng = random.Random(11)
                paid: Counter[str] = Counter()
                answers: Counter[str] = Counter()

                async def pay_direct(rnd: int, k: int) -> None:
                    async def one(i: int) -> None:
                        lid = rng.choice(ids)
                        paid[lid] += 1
                        got = await updates.pay(client, pool, lid, PaymentInput(
                            payment_id=f"d{rnd}-{i}", amount=Decimal("1.00"), currency="CNY"))
                        answers[f"direct {got.status.value}"] += 1
                    await gather_bounded((one(i) for i in range(k)), args.concurrency)

                async def pay_api(rnd: int, k: int) -> None:
                    async def one(i: int) -> None:
                        lid = rng.choice(ids)
                        paid[lid] += 1
                        answers[f"api {await api.pay(lid, f'a{rnd}-{i}')}"] += 1
                    await gather_bounded((one(i) for i in range(k)), args.concurrency)

                log(f"payments: {payments}, {args.concurrency} in flight, ABBA")
                pay_secs = await abba({"direct": pay_direct, "api": pay_api}, payments)
                pay_n = {"direct": payments // 4 + (payments - 3 * (payments // 4)),
                         "api": 2 * (payments // 4)}
                pay_rate = {k: pay_n[k] / pay_secs[k] for k in pay_n}
                # ------------------------------------------------------------ visible
                not_visible = 0

                async def visible(i: int) -> float:
                    nonlocal not_visible
                    lid = rng.choice(ids)
                    paid[lid] += 1
                    t = time.perf_counter()
                    await api.pay(lid, f"v-{i}")
                    end = time.monotonic() + 10
                    while time.monotonic() < end:
                        if await api.paid_total(lid) >= paid[lid]:
                            return time.perf_counter() - t
                    not_visible += 1
                    return time.perf_counter() - t

                log(f"payment -> visible in status over HTTP: {args.samples} samples")
                seen = await timed_samples(visible, args.samples, budget=args.budget)
                api_cpu, server_cpu = s.cpu("api"), s.cpu("server")
        finally:
            await api.http.aclose()
            await api.proc.stop()
            await conns.close()
    ratio_start = start_rate["api"] / start_rate["direct"]
    ratio_pay = pay_rate["api"] / pay_rate["direct"]
    vis = ms_summary(seen)
    p99 = vis["p99"]
    # `ours` is through the API, `bare` the service called directly: the ratio is API/direct.
    report.add("batch start, loans/s (API vs start_many)", round(start_rate["api"], 1),
               round(start_rate["direct"], 1), "/s", target=f"ratio >= {RATIO_TARGET}",
               met=ratio_start >= RATIO_TARGET)
    report.add(f"payments/s at {opened} open cases (API vs service)", round(pay_rate["api"], 1),
               round(pay_rate["direct"], 1), "/s", target=f"ratio >= {RATIO_TARGET}",
               met=ratio_pay >= RATIO_TARGET)
    report.add("payment -> visible in status, p50 (HTTP)", vis["p50"], None, "ms")
    report.add("payment -> visible in status, p99 (HTTP)", p99, None, "ms",
               target=f"< {P99_TARGET_MS} ms", met=p99 is not None and p99 < P99_TARGET_MS)
    report.add("payment -> visible in status, max (HTTP)", vis["max"], None, "ms")
    report.add("API process CPU (whole run)", round(api_cpu or 0, 1), None, "s")
    report.add("server CPU (whole run)", round(server_cpu or 0, 1), None, "s")
    report.extra = {"starts": dict(started), "payments": dict(answers),
                    "not_visible_within_10s": not_visible, "start_secs": start_secs,
                    "pay_secs": pay_secs}
    report.notes.append("ours = through the HTTP API, bare = service/ called directly from the "
                        "benchmark process (same environment); ratio = API / direct")
    report.notes.append(f"starts {dict(started)}; payments {dict(answers)}")
    if started.get("direct started", 0) + started.get("api started", 0) != n:
        report.notes.append(f"WARNING: not every loan started: {dict(started)}")
    bad = {k: v for k, v in answers.items() if not k.endswith(PaymentStatus.APPLIED.value)}
    if bad or not_visible:
        report.notes.append(f"WARNING: payments not applied {bad}, not visible {not_visible}")
    return report


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0], 10_000)
    p.add_argument("--batch", type=int, default=1000, help="loans per batch request")
    p.add_argument("--payments", type=int, default=2000, help="payments, both sides together")
    p.add_argument("--concurrency", type=int, default=20, help="requests in flight, each side")
    p.add_argument("--samples", type=int, default=200, help="payment -> visible samples")
    p.add_argument("--budget", type=float, default=300, help="seconds for the samples at most")
    p.add_argument("--settle-timeout", type=float, default=3000,
                   help="seconds to wait for the worker to open every case")
    return p


if __name__ == "__main__":
    run(main, parser().parse_args())
