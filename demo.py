"""The demo: twenty overdue loans through the collection ladder in about two minutes.

    make demo

Starts the embedded stack (Temporal dev server with its Web UI, PostgreSQL, the provider
emulator) and a worker, opens 20 cases under the `demo` policy (a policy day lasts 3 seconds: the
compression is a policy setting, the workflow code is the production code), then plays the
outside world: the loan system pays some loans in full and some in part, an agent answers call
tasks and records a promise, and the rest are left to escalate to legal action and write-off.
A live table shows every case until each reaches an end state; a summary follows, and everything
is shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from contracts.messages import (
    CaseStatus,
    LoanInput,
    PaymentInput,
    PromiseInput,
    SettlementInput,
    TaskOutcome,
    TaskOutcomeInput,
)
from contracts.names import workflow_id_for
from demo_progress import Progress, finished, give_up_message
from infra.database import create_pool
from infra.endpoints import free_port
from infra.run import start_api, stop
from infra.settings import Settings
from infra.shutdown import run_until_signalled
from infra.stack import LocalStack
from service import cases, updates
from service.errors import ServiceError
from worker import providers_from, running_worker

console = Console(width=None if sys.stdout.isatty() else 130)
DAY_SECONDS = 3  # must match policies/demo.toml
# Give up once no case has changed for this long: the demo ladder's longest quiet stretch is 10
# policy days (D+20 to D+30), so twice that. A busy machine slows cases down; it does not stop them.
STALL_SECONDS = float(os.environ.get("DEMO_STALL_SECONDS", 20 * DAY_SECONDS))
MAX_SECONDS = float(os.environ.get("DEMO_MAX_SECONDS", 1800))
NAMES = ["Li Lei", "Han Meimei", "Wang Fang", "Zhang Wei", "Liu Yang", "Chen Jing", "Emily Carter",
         "James Brown", "Zhao Min", "Sun Li"]


@dataclass
class Script:
    """What the outside world does to one loan, in policy days after the demo starts."""

    loan: LoanInput
    plan: str  # "pay in full", "pay in part", "promise", "settle", "unpaid"
    done: set[str] = field(default_factory=set)
    settlement: Decimal | None = None


def demo_loans(today: date, rng: random.Random) -> list[Script]:
    plans = (["pay in full"] * 6 + ["pay in part"] * 4 + ["promise"] * 2 + ["settle"]
             + ["unpaid"] * 7)
    scripts = []
    for i, plan in enumerate(plans):
        english = i % 4 == 3
        amount = (Decimal(rng.choice([800, 1500, 3200, 6500, 12000]))
                  + Decimal(rng.randint(0, 99)) / 100)
        scripts.append(Script(
            loan=LoanInput(
                loan_id=f"DEMO-{i + 1:03d}",
                borrower_name=NAMES[i % len(NAMES)],
                phone=f"+86138{rng.randint(10_000_000, 99_999_999)}" if not english
                else f"+1202555{rng.randint(1000, 1999)}",
                email=f"borrower{i + 1}@example.com",
                locale="en" if english else "zh-CN",
                timezone="America/New_York" if english else "Asia/Shanghai",
                currency="CNY",
                amount_overdue=amount,
                interest=(amount * Decimal("0.08")).quantize(Decimal("0.01")),
                fees=Decimal("25.00"),
                due_date=today - timedelta(days=rng.choice([0, 1, 2])),
                lender="Demo Consumer Finance",
                policy="demo",
            ),
            plan=plan,
        ))
    return scripts


async def play_outside_world(client: Client, pool: asyncpg.Pool, scripts: list[Script],
                             started: float, stop: asyncio.Event) -> None:
    """The loan system and an agent, acting on the demo's compressed clock."""
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    while not stop.is_set():
        day = (loop.time() - started) / DAY_SECONDS
        for s in scripts:
            loan = s.loan
            try:
                pay_day = 3 + int(loan.loan_id[-1])
                if s.plan == "pay in full" and day > pay_day and "paid" not in s.done:
                    s.done.add("paid")
                    await cases.pay(client, loan.loan_id, PaymentInput(
                        payment_id=f"{loan.loan_id}-P1", amount=loan.amount_overdue,
                        currency="CNY"))
                elif s.plan == "pay in part" and day > 4 and "part" not in s.done:
                    s.done.add("part")
                    await cases.pay(client, loan.loan_id, PaymentInput(
                        payment_id=f"{loan.loan_id}-P1",
                        amount=(loan.amount_overdue / 3).quantize(Decimal("0.01")), currency="CNY"))
                elif s.plan == "promise" and day > 2 and "promise" not in s.done:
                    s.done.add("promise")
                    # The case lives on the policy's clock: its "today" is due date + DPD.
                    st = await cases.status(client, loan.loan_id)
                    policy_today = loan.due_date + timedelta(days=st.days_past_due)
                    await updates.promise(client, loan.loan_id, PromiseInput(
                        agent="agent-007", amount=st.outstanding, currency="CNY",
                        promised_date=policy_today + timedelta(days=2)))
                elif s.plan == "settle" and day > 3 and "offer" not in s.done:
                    s.done.add("offer")
                    st = await cases.status(client, loan.loan_id)
                    policy_today = loan.due_date + timedelta(days=st.days_past_due)
                    s.settlement = (st.outstanding * Decimal("0.6")).quantize(Decimal("0.01"))
                    await updates.settle(client, loan.loan_id, SettlementInput(
                        agent="agent-007", amount=s.settlement, currency="CNY",
                        pay_by=policy_today + timedelta(days=3)))
                elif s.plan == "settle" and day > 5 and "settled" not in s.done and s.settlement:
                    s.done.add("settled")
                    await cases.pay(client, loan.loan_id, PaymentInput(
                        payment_id=f"{loan.loan_id}-S1", amount=s.settlement, currency="CNY"))
                elif s.plan == "promise" and day > 5 and "kept" not in s.done:
                    s.done.add("kept")
                    await cases.pay(client, loan.loan_id, PaymentInput(
                        payment_id=f"{loan.loan_id}-P1", amount=loan.amount_overdue,
                        currency="CNY"))
            except ServiceError:
                pass  # the case may have closed in the meantime
        # The agent console: answer open call tasks (a visit is left to miss its deadline).
        for task in await pool.fetch(
            "SELECT task_key, loan_id FROM tasks WHERE status = 'open' AND kind = 'call' "
            "AND loan_id LIKE 'DEMO-%'"
        ):
            outcome = rng.choice([TaskOutcome.NO_ANSWER, TaskOutcome.REACHED,
                                  TaskOutcome.NO_ANSWER])
            with contextlib.suppress(ServiceError):  # the case may have closed meanwhile
                await updates.task_outcome(client, task["loan_id"], TaskOutcomeInput(
                    task_key=task["task_key"], outcome=outcome, agent="agent-007"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def render(statuses: dict[str, CaseStatus | None], scripts: list[Script], elapsed: float) -> Table:
    table = Table(title=f"Collection cases, policy day {elapsed / DAY_SECONDS:.0f} "
                        f"({elapsed:.0f} s; a policy day lasts {DAY_SECONDS} s)")
    for col in ("loan", "scenario", "state", "stage", "DPD", "outstanding", "sms", "email", "calls",
                "next action"):
        table.add_column(col)
    for s in scripts:
        st = statuses.get(s.loan.loan_id)
        if st is None:
            table.add_row(s.loan.loan_id, s.plan, "opening", "", "", "", "", "", "", "")
            continue
        colour = {"paid": "green", "settled": "green", "written_off": "red",
                  "closed": "yellow"}.get(st.state.value, "white")
        table.add_row(
            s.loan.loan_id, s.plan, f"[{colour}]{st.state.value}[/]", st.stage.value,
            str(st.days_past_due), f"{st.outstanding:,.2f} {st.currency}",
            str(st.contact_counts.get("sms", 0)), str(st.contact_counts.get("email", 0)),
            str(st.contact_counts.get("call", 0)), (st.next_action or "")[:32],
        )
    return table


def demo_state_dir() -> Path:
    return Path(os.environ.get("DEMO_STATE_DIR", ".state/demo")).resolve()


async def run_demo() -> int:
    logging.basicConfig(level=logging.WARNING)
    state_dir = demo_state_dir()
    shutil.rmtree(state_dir, ignore_errors=True)  # every demo starts from an empty book
    settings = Settings(state_dir=state_dir, temporal_port=free_port(), ui_port=free_port(),
                        emulator_port=free_port(), task_queue="demo-collections")
    console.print("[bold]Starting the embedded stack[/] "
                  "(Temporal dev server, PostgreSQL, provider emulator)...")
    async with LocalStack(settings) as ep:
        pool = await create_pool(ep.dsn)
        try:
            async with running_worker(ep.client, pool, providers_from(ep, settings),
                                      task_queue=settings.task_queue):
                console.print(f"Temporal Web UI: [link]{ep.ui_url}[/]  (workflows are encrypted; "
                              f"the data is readable through the codec server, see README)")
                api = await asyncio.to_thread(start_api, state_dir, state_dir / "api.log",
                                              API_PORT=str(free_port()),
                                              TASK_QUEUE=settings.task_queue)
                if api is not None:
                    console.print(f"Console: [link]{api[1]}/console[/]  (the demo's cases, while "
                                  f"it runs; API keys in {state_dir / 'api-keys.json'})")
                try:
                    return await drive(ep.client, pool, settings.task_queue)
                finally:
                    await asyncio.to_thread(stop, api[0] if api else None)
        finally:
            await pool.close()


async def drive(client: Client, pool: asyncpg.Pool, task_queue: str) -> int:
    rng = random.Random(20261123)
    today = datetime.now(UTC).date()
    scripts = demo_loans(today, rng)
    counts = await cases.start_many(client, [s.loan for s in scripts], task_queue=task_queue)
    console.print(f"Opened {counts.get('started', 0)} cases under the demo policy.")
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = asyncio.Event()
    world = asyncio.create_task(play_outside_world(client, pool, scripts, started, stop))
    statuses: dict[str, CaseStatus | None] = {}
    no_status: dict[str, str] = {}
    progress = Progress(stall_seconds=STALL_SECONDS, max_seconds=MAX_SECONDS, started=started)
    interactive = console.is_terminal
    last_print = 0.0
    with Live(render(statuses, scripts, 0), console=console, refresh_per_second=2,
              transient=False) if interactive else _NoLive() as live:
        while not progress.give_up(loop.time()):
            for s in scripts:
                try:
                    statuses[s.loan.loan_id] = await cases.status(client, s.loan.loan_id)
                except ServiceError as err:
                    statuses[s.loan.loan_id] = None
                    no_status[s.loan.loan_id] = await why_no_status(client, s.loan.loan_id, err)
            elapsed = loop.time() - started
            live.update(render(statuses, scripts, elapsed))
            if not interactive and elapsed - last_print >= 15:
                last_print = elapsed
                states = Counter(st.state.value for st in statuses.values() if st)
                console.print(f"[{elapsed:5.0f} s] "
                              + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
            progress.observe(statuses, loop.time())
            if progress.all_finished(statuses):
                break
            await asyncio.sleep(1)
    stop.set()
    await world
    if not interactive:
        console.print(render(statuses, scripts, loop.time() - started))
    code = await summary(pool, statuses)
    if code:
        console.print("[red]" + give_up_message(
            statuses, stalled_for=progress.stalled_for(loop.time()),
            elapsed=loop.time() - started, day_seconds=DAY_SECONDS, no_status=no_status) + "[/]",
            highlight=False)
    return code


async def why_no_status(client: Client, loan_id: str, err: ServiceError) -> str:
    """What the server knows of a case whose status query failed (a query on a closed workflow
    replays its whole history, so a replay failure shows up here)."""
    try:
        described = await client.get_workflow_handle(workflow_id_for(loan_id)).describe()
    except RPCError as rpc:
        return f"{type(err).__name__}; the workflow cannot be described ({rpc.status.name})"
    state = described.status.name.lower() if described.status else "unknown"
    return f"{type(err).__name__} from the status query; the workflow is {state}"


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _: object) -> None:
        return None


async def summary(pool: asyncpg.Pool, statuses: dict[str, CaseStatus | None]) -> int:
    states = Counter(st.state.value for st in statuses.values() if st)
    reached_legal = await pool.fetchval(
        "SELECT count(DISTINCT loan_id) FROM stage_history "
        "WHERE to_stage = 'legal' AND loan_id LIKE 'DEMO-%'")
    sent = await pool.fetch(
        "SELECT channel, count(*) AS n FROM contacts "
        "WHERE decision = 'sent' AND loan_id LIKE 'DEMO-%' GROUP BY channel ORDER BY channel")
    deferred = await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE decision = 'deferred' AND loan_id LIKE 'DEMO-%'")
    collected = await pool.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM payments WHERE loan_id LIKE 'DEMO-%'")
    legal = await pool.fetchval("SELECT count(*) FROM legal_actions WHERE loan_id LIKE 'DEMO-%'")
    table = Table(title="Demo summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    for state in ("paid", "settled", "written_off", "closed", "active"):
        table.add_row(f"cases {state}", str(states.get(state, 0)))
    table.add_row("cases escalated to legal", str(reached_legal))
    table.add_row("legal actions recorded", str(legal))
    for row in sent:
        table.add_row(f"{row['channel']} contacts made", str(row["n"]))
    table.add_row("contacts deferred by contact rules", str(deferred))
    table.add_row("collected (CNY)", f"{collected:,.2f}")
    console.print(table)
    if not all(finished(st) for st in statuses.values()):
        return 1
    console.print("[green]Every case reached an end state.[/] Shutting down.")
    return 0


def main() -> None:
    # Ctrl-C and SIGTERM unwind the stack through its context managers: nothing is left running.
    code = run_until_signalled(run_demo())
    if code is None:
        console.print("[yellow]Demo interrupted; the stack was shut down.[/]")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
