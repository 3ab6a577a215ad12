"""The demo: twenty overdue loans through the collection ladder in about two minutes.

    make demo

Starts the embedded stack (Temporal dev server with its Web UI, PostgreSQL, the provider
emulator) and a worker, opens 20 cases under the `demo` policy (a policy day lasts 3 seconds: the
compression is a policy setting, the workflow code is the production code), then plays the
outside world over the HTTP API it starts beside them (`python -m api`, one key per role): the
loan system opens the cases in one batch and pays some loans in full and some in part, an agent
claims call tasks, reports the calls and records a promise and a settlement, an operator reads
each case's status, and the provider emulator reports every delivery to the API's webhooks (one
borrower texts STOP). The rest are left to escalate to legal action and write-off. A live table
shows every case until each reaches an end state; a summary follows, and everything is shut
down. The requests themselves are in demo_http.py, what is shown in demo_view.py.
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
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from rich.live import Live
from temporalio.client import Client

from api.keys import KEY_FILE
from contracts.messages import CaseStatus, LoanInput
from demo_http import ApiRefused, DemoApi, Keys, borrower_texts, point_emulator_at
from demo_progress import Progress, give_up_message
from demo_view import DAY_SECONDS, NoLive, console, render, step, summary, why_no_status
from infra.database import create_pool
from infra.endpoints import free_port
from infra.run import start_api, stop
from infra.settings import Settings
from infra.shutdown import run_until_signalled
from infra.stack import LocalStack
from infra.vault_crypto import vault_keys
from worker import providers_from, running_worker

# Give up once no case has changed for this long: the demo ladder's longest quiet stretch is 10
# policy days (D+20 to D+30), so twice that. A busy machine slows cases down; it does not stop them.
STALL_SECONDS = float(os.environ.get("DEMO_STALL_SECONDS", 20 * DAY_SECONDS))
MAX_SECONDS = float(os.environ.get("DEMO_MAX_SECONDS", 1800))
OPTS_OUT = "DEMO-020"  # an unpaid loan whose borrower texts STOP on policy day 2
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


async def play_outside_world(api: DemoApi, emulator_url: str | None, scripts: list[Script],
                             started: float, stop: asyncio.Event) -> None:
    """The loan system, an agent and one borrower, over HTTP on the demo's compressed clock. What
    falls due is done at once, side by side: a slow answer from one case holds up no other."""
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    while not stop.is_set():
        day = (loop.time() - started) / DAY_SECONDS
        due = [act for s in scripts if (act := next_act(api, emulator_url, s, day)) is not None]
        await asyncio.gather(*due, work_the_queue(api, rng, day))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def next_act(api: DemoApi, emulator_url: str | None, s: Script,
             day: float) -> Awaitable[None] | None:
    """What the outside world does to the loan now, if anything (each thing done once)."""
    loan, agent = s.loan, api.keys.agent
    lid, pays = loan.loan_id, f"POST /v1/cases/{loan.loan_id}/payments"

    def once(what: str, when: bool) -> bool:
        if when and what not in s.done:
            s.done.add(what)
            return True
        return False

    if s.plan == "pay in full" and once("paid", day > 3 + int(lid[-1])):
        return act(day, "loan system", pays,
                   api.pay(lid, f"{lid}-P1", loan.amount_overdue, "CNY"))
    if s.plan == "pay in part" and once("part", day > 4):
        part = (loan.amount_overdue / 3).quantize(Decimal("0.01"))
        return act(day, "loan system", pays, api.pay(lid, f"{lid}-P1", part, "CNY"))
    if s.plan == "promise" and once("promise", day > 2):
        async def promise() -> str:
            # The case lives on the policy's clock: its "today" is due date + DPD.
            st = await api.status(lid)
            by = loan.due_date + timedelta(days=st.days_past_due + 2)
            return await api.promise(lid, st.outstanding, "CNY", by)
        return act(day, agent, f"POST /v1/cases/{lid}/promise", promise())
    if s.plan == "promise" and once("kept", day > 5):
        return act(day, "loan system", pays,
                   api.pay(lid, f"{lid}-P1", loan.amount_overdue, "CNY"))
    if s.plan == "settle" and once("offer", day > 3):
        async def offer() -> str:
            st = await api.status(lid)
            s.settlement = (st.outstanding * Decimal("0.6")).quantize(Decimal("0.01"))
            pay_by = loan.due_date + timedelta(days=st.days_past_due + 3)
            return await api.settle(lid, s.settlement, "CNY", pay_by)
        return act(day, agent, f"POST /v1/cases/{lid}/settle", offer())
    if s.plan == "settle" and s.settlement and once("settled", day > 5):
        return act(day, "loan system", pays, api.pay(lid, f"{lid}-S1", s.settlement, "CNY"))
    if emulator_url and lid == OPTS_OUT and once("stop", day > 2):
        # Via Twilio (the emulator) to the inbound webhook: SMS stops, e-mail goes on.
        async def texts_stop() -> str:
            replies = await borrower_texts(emulator_url, loan.phone, "STOP")
            return f"Twilio answers: {' / '.join(replies) or '-'}"
        return act(day, "borrower", f"texts STOP about {lid}", texts_stop())
    return None


async def work_the_queue(api: DemoApi, rng: random.Random, day: float) -> None:
    """The agent console: claim each open call task and report the call (a visit is left to
    miss its deadline)."""
    try:
        tasks = [t for t in await api.call_tasks() if t["loan_id"].startswith("DEMO-")]
    except ApiRefused as err:
        step(day, api.keys.agent, "GET /v1/tasks", f"refused: {err}")
        return
    for task in tasks:
        outcome = rng.choice(["no_answer", "reached", "no_answer"])
        await act(day, api.keys.agent, f"claims {task['task_key']}, reports {outcome}",
                  api.work_task(task["task_key"], task["loan_id"], outcome))


async def act(day: float, who: str, what: str, call: Awaitable[str]) -> None:
    try:
        answer = await call
    except ApiRefused as err:  # the case may have closed meanwhile
        answer = f"refused: {err}"
    step(day, who, what, answer)


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
            # The API keeps the borrowers' details in the vault, under the stack's key: the
            # worker reads them from there at send time.
            async with running_worker(ep.client, pool, providers_from(ep, settings),
                                      task_queue=settings.task_queue,
                                      vault_keys=vault_keys(state_dir=state_dir)):
                console.print(f"Temporal Web UI: [link]{ep.ui_url}[/]  (workflows are encrypted; "
                              f"the data is readable through the codec server, see README)")
                started = await asyncio.to_thread(start_api, state_dir, state_dir / "api.log",
                                                  API_PORT=str(free_port()),
                                                  TASK_QUEUE=settings.task_queue)
                if started is None:
                    console.print("[red]The HTTP API did not start; the demo plays through it.[/]")
                    return 1
                proc, url = started
                try:
                    console.print(f"HTTP API: [link]{url}/docs[/]  console: [link]{url}/console[/]"
                                  f"  (API keys, one per role, in {state_dir / KEY_FILE})")
                    if ep.emulator_url:
                        await point_emulator_at(ep.emulator_url, url, state_dir)
                        console.print("The provider emulator reports deliveries and replies to "
                                      "the API's webhooks, signed as Twilio and SendGrid sign.")
                    api = DemoApi(url, Keys.read(state_dir))
                    try:
                        return await drive(api, ep.client, pool, ep.emulator_url)
                    finally:
                        await api.aclose()
                finally:
                    await asyncio.to_thread(stop, proc)
        finally:
            await pool.close()


async def drive(api: DemoApi, client: Client, pool: asyncpg.Pool,
                emulator_url: str | None) -> int:
    rng = random.Random(20261123)
    today = datetime.now(UTC).date()
    scripts = demo_loans(today, rng)
    plans = {s.loan.loan_id: s.plan for s in scripts}
    counts = await api.start_batch([s.loan for s in scripts])
    step(0, "loan system", f"POST /v1/cases:batch with {len(scripts)} loans",
         ", ".join(f"{k} {v}" for k, v in counts.items()))
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = asyncio.Event()
    world = asyncio.create_task(play_outside_world(api, emulator_url, scripts, started, stop))
    statuses: dict[str, CaseStatus | None] = {}
    no_status: dict[str, str] = {}
    progress = Progress(stall_seconds=STALL_SECONDS, max_seconds=MAX_SECONDS, started=started)
    interactive = console.is_terminal
    last_print = 0.0
    with Live(render(statuses, plans, 0), console=console, refresh_per_second=2,
              transient=False) if interactive else NoLive() as live:
        while not progress.give_up(loop.time()):
            for s in scripts:  # what an operator sees: GET /v1/cases/{loan_id}
                try:
                    statuses[s.loan.loan_id] = await api.status(s.loan.loan_id)
                except ApiRefused as err:
                    statuses[s.loan.loan_id] = None
                    no_status[s.loan.loan_id] = await why_no_status(client, s.loan.loan_id, err)
            elapsed = loop.time() - started
            live.update(render(statuses, plans, elapsed))
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
        console.print(render(statuses, plans, loop.time() - started))
    code = await summary(pool, statuses)
    if code:
        console.print("[red]" + give_up_message(
            statuses, stalled_for=progress.stalled_for(loop.time()),
            elapsed=loop.time() - started, day_seconds=DAY_SECONDS, no_status=no_status) + "[/]",
            highlight=False)
    return code


def main() -> None:
    # Ctrl-C and SIGTERM unwind the stack through its context managers: nothing is left running.
    code = run_until_signalled(run_demo())
    if code is None:
        console.print("[yellow]Demo interrupted; the stack was shut down.[/]")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
