"""What the demo shows: the walkthrough's lines, the live table of cases, what the server knows
of a case without a status, and the summary at the end."""

from __future__ import annotations

import sys
from collections import Counter

import asyncpg
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from contracts.messages import CaseStatus
from contracts.names import workflow_id_for
from demo_http import ApiRefused
from demo_progress import finished

console = Console(width=None if sys.stdout.isatty() else 130)
DAY_SECONDS = 3  # must match policies/demo.toml


def step(day: float, who: str, what: str, answer: str) -> None:
    """One line of the walkthrough: who did what over HTTP, and what the case answered."""
    console.print(f"[dim]day {day:4.1f}[/] [bold]{who}[/] {what} -> {answer}", highlight=False)


def render(statuses: dict[str, CaseStatus | None], plans: dict[str, str], elapsed: float) -> Table:
    """The live table: one row per case, its scenario (`plans`: loan id -> scenario) and status."""
    table = Table(title=f"Collection cases, policy day {elapsed / DAY_SECONDS:.0f} "
                        f"({elapsed:.0f} s; a policy day lasts {DAY_SECONDS} s)")
    for col in ("loan", "scenario", "state", "stage", "DPD", "outstanding", "sms", "email", "calls",
                "next action"):
        table.add_column(col)
    for loan_id, plan in plans.items():
        st = statuses.get(loan_id)
        if st is None:
            table.add_row(loan_id, plan, "opening", "", "", "", "", "", "", "")
            continue
        colour = {"paid": "green", "settled": "green", "written_off": "red",
                  "closed": "yellow"}.get(st.state.value, "white")
        table.add_row(
            loan_id, plan, f"[{colour}]{st.state.value}[/]", st.stage.value,
            str(st.days_past_due), f"{st.outstanding:,.2f} {st.currency}",
            str(st.contact_counts.get("sms", 0)), str(st.contact_counts.get("email", 0)),
            str(st.contact_counts.get("call", 0)), (st.next_action or "")[:32],
        )
    return table


async def why_no_status(client: Client, loan_id: str, err: ApiRefused) -> str:
    """What the server knows of a case whose status query failed (a query on a closed workflow
    replays its whole history, so a replay failure shows up here)."""
    try:
        described = await client.get_workflow_handle(workflow_id_for(loan_id)).describe()
    except RPCError as rpc:
        return f"{err.status} {err.kind}; the workflow cannot be described ({rpc.status.name})"
    state = described.status.name.lower() if described.status else "unknown"
    return f"{err.status} {err.kind} from the status query; the workflow is {state}"


class NoLive:
    """Stands in for rich's Live display when the output is not a terminal."""

    def __enter__(self) -> NoLive:
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
    # What the providers told the API's webhooks.
    reported = await pool.fetch(
        "SELECT channel, delivery_status, count(*) AS n FROM contacts WHERE loan_id LIKE 'DEMO-%' "
        "AND delivery_status IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2")
    opted_out = await pool.fetchval(
        "SELECT count(*) FROM contact_suppressions WHERE kind = 'opt_out' AND lifted_at IS NULL")
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
    for row in reported:
        table.add_row(f"{row['channel']} reported {row['delivery_status']} (webhooks)",
                      str(row["n"]))
    table.add_row("SMS opt-outs (STOP, inbound webhook)", str(opted_out))
    table.add_row("collected (CNY)", f"{collected:,.2f}")
    console.print(table)
    if not all(finished(st) for st in statuses.values()):
        return 1
    console.print("[green]Every case reached an end state.[/] Shutting down.")
    return 0
