"""Reading the sources: the emulator's message log over its control API (httpx), PostgreSQL with
plain SQL (asyncpg), Temporal through the client's list and describe calls, and the soak's run log;
`gather` reads them all and reconciles them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from bench.soak.reconcile.inputs import (
    WORKFLOW_PREFIX,
    CaseRow,
    ContactRow,
    Loan,
    OutboxRow,
    PaymentRow,
    ProviderMessage,
    ReportedOutcome,
    ReportedPayment,
    TaskRow,
    UnappliedRow,
    WorkflowFact,
)
from bench.soak.reconcile.reconciliation import Reconciliation, reconcile
from bench.soak.reconcile.rules import ladder_steps, load_rule_packs


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _emulator(emulator_url: str, path: str, wait_seconds: float) -> Any:
    """One answer of the emulator's control API, as JSON."""
    async with httpx.AsyncClient(base_url=emulator_url, timeout=wait_seconds) as http:
        resp = await http.get(path)
        resp.raise_for_status()
        return resp.json()


async def provider_log(emulator_url: str) -> list[ProviderMessage]:
    found = (await _emulator(emulator_url, "/_emulator/messages", 120))["messages"]
    return [ProviderMessage(
        channel=m["channel"], ident=m["id"], to=m["to"], body=m.get("body") or "",
        outbox_key=(m.get("custom_args") or {}).get("outbox_key"),
        received_at=_aware(datetime.fromisoformat(m["received_at"])),
        reply=bool(m.get("reply_to"))) for m in found]


async def provider_stats(emulator_url: str) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = await _emulator(emulator_url, "/_emulator/stats", 60)
    return stats


async def database_rows(dsn: str, loan_ids: set[str]) -> dict[str, list[Any]]:
    """The soak's loans' rows, by table, with plain SQL."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = sorted(loan_ids)
        keys = [f"{WORKFLOW_PREFIX}{i}/" for i in ids]

        async def of_loans(columns: str, table: str) -> list[Any]:
            return await conn.fetch(
                f"SELECT {columns} FROM {table} WHERE loan_id = ANY($1::text[])", ids)

        outbox = await conn.fetch(
            "SELECT outbox_key, channel, status, provider_id, body_sha256, claimed_at, error "
            "FROM outbox "
            "WHERE split_part(outbox_key, '/', 1) || '/' = ANY($1::text[])", keys)
        contacts = await of_loans(
            "idempotency_key, loan_id, borrower_key, contact_key, channel, step_id, decision, "
            "outcome, rule, occurred_at, delivery_status", "contacts")
        payments = await of_loans("loan_id, payment_id, amount, currency, allocation", "payments")
        unapplied = await of_loans("loan_id, payment_id, amount, currency, status, reason",
                                   "unapplied_payments")
        cases = await of_loans("loan_id, state, stage, currency, amount_placed, outstanding, "
                               "paid_total, rule_pack, opened_at", "cases")
        tasks = await of_loans("task_key, loan_id, status, outcome", "tasks")
    finally:
        await conn.close()
    return {
        "outbox": [OutboxRow(r["outbox_key"], r["channel"], r["status"], r["provider_id"],
                             r["body_sha256"], r["claimed_at"], r["error"]) for r in outbox],
        "contacts": [ContactRow(r["idempotency_key"], r["loan_id"], r["borrower_key"],
                                r["contact_key"], r["channel"], r["step_id"], r["decision"],
                                r["outcome"], r["rule"], r["occurred_at"], r["delivery_status"])
                     for r in contacts],
        "payments": [PaymentRow(r["loan_id"], r["payment_id"], r["amount"], r["currency"].strip(),
                                {k: str(v) for k, v in json.loads(r["allocation"]).items()})
                     for r in payments],
        "unapplied": [UnappliedRow(r["loan_id"], r["payment_id"], Decimal(r["amount"]),
                                   r["currency"].strip(), r["status"], r["reason"])
                      for r in unapplied],
        "cases": [CaseRow(r["loan_id"], r["state"], r["stage"], r["currency"].strip(),
                          r["amount_placed"], r["outstanding"], r["paid_total"], r["rule_pack"],
                          r["opened_at"]) for r in cases],
        "tasks": [TaskRow(r["task_key"], r["loan_id"], r["status"], r["outcome"])
                  for r in tasks],
    }


_STATUS = {
    WorkflowExecutionStatus.RUNNING: "running", WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed", WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


async def temporal_facts(client: Client, loan_ids: set[str], settle_seconds: float = 20,
                         looks: int = 4) -> list[WorkflowFact]:
    """Every case workflow's latest run: listed, then each running one described again,
    `settle_seconds` apart, to tell a stuck case from a slow one: one whose history has not grown
    is looked at again, up to `looks` times (on a loaded machine a case may wait longer than one
    interval for a worker; a stuck one never grows)."""
    latest: dict[str, Any] = {}
    async for w in client.list_workflows(f"WorkflowId STARTS_WITH '{WORKFLOW_PREFIX}'"):
        if w.id.removeprefix(WORKFLOW_PREFIX) in loan_ids and w.id not in latest:
            latest[w.id] = w  # newest run first
    running = [wid for wid, w in latest.items() if w.status == WorkflowExecutionStatus.RUNNING]
    limit = asyncio.Semaphore(20)

    async def look(wid: str) -> tuple[int, str | None]:
        async with limit:
            d = await client.get_workflow_handle(wid).describe()
        raw = d.raw_description
        pending = None
        if raw.pending_activities:
            a = raw.pending_activities[0]
            pending = (f"{a.activity_type.name} attempt {a.attempt}"
                       + (f": {a.last_failure.message[:120]}" if a.last_failure.message else ""))
        return raw.workflow_execution_info.history_length, pending

    async def look_all() -> dict[str, tuple[int, str | None]]:
        return dict(zip(running, await asyncio.gather(*(look(w) for w in running)), strict=True))

    first = await look_all()
    later = dict(first)
    waiting = list(running)
    for _ in range(max(looks, 1)):
        if not waiting:
            break
        await asyncio.sleep(settle_seconds)
        seen = dict(zip(waiting, await asyncio.gather(*(look(w) for w in waiting)), strict=True))
        later.update(seen)
        waiting = [w for w in waiting if seen[w][0] <= first[w][0]]
    facts = []
    for wid, w in latest.items():
        sa = w.search_attributes or {}
        state = sa.get("CollectionState")
        outstanding = sa.get("OutstandingAmount")
        length = first.get(wid, (w.history_length or 0, None))
        facts.append(WorkflowFact(
            workflow_id=wid, status=_STATUS.get(w.status, "unknown") if w.status else "unknown",
            state=str(state[0]) if state else None,
            outstanding=int(outstanding[0]) if outstanding else None,
            history_length=length[0], history_length_later=later.get(wid, length)[0],
            pending=later.get(wid, length)[1]))
    return facts


@dataclass(frozen=True)
class RunLog:
    """What the soak reported and injected (`run.json`, written by the driver)."""

    loans: list[Loan]
    payments: list[ReportedPayment]
    outcomes: list[ReportedOutcome]
    faults: dict[str, Any]
    endpoints: dict[str, str]
    day_seconds: int
    policy: Path

    @classmethod
    def read(cls, path: Path) -> RunLog:
        raw = json.loads(path.read_text())
        return cls(
            loans=[Loan(x["loan_id"], x["timezone"], x["currency"], Decimal(x["amount"]),
                        x["started"]) for x in raw["loans"]],
            payments=[ReportedPayment(x["loan_id"], x["payment_id"], Decimal(x["amount"]),
                                      x["currency"], x["answer"]) for x in raw["payments"]],
            outcomes=[ReportedOutcome(x["task_key"], x["loan_id"], x["outcome"], x["accepted"])
                      for x in raw["outcomes"]],
            faults=raw["faults"], endpoints=raw["endpoints"], day_seconds=raw["day_seconds"],
            policy=Path(raw["policy_file"]))


async def gather(run: RunLog, client: Client, settle_seconds: float = 20) -> Reconciliation:
    ids = {loan.loan_id for loan in run.loans}
    provider = await provider_log(run.endpoints["emulator_url"])
    stats = await provider_stats(run.endpoints["emulator_url"])
    workflows = await temporal_facts(client, ids, settle_seconds)
    rows = await database_rows(run.endpoints["dsn"], ids)  # after Temporal: the later picture
    faults = dict(run.faults)
    faults["provider answers (emulator stats)"] = stats
    return reconcile(loans=run.loans, payments=run.payments, outcomes=run.outcomes,
                     provider=provider, outbox=rows["outbox"], contacts=rows["contacts"],
                     applied=rows["payments"], unapplied=rows["unapplied"], cases=rows["cases"],
                     tasks=rows["tasks"], workflows=workflows, packs=load_rule_packs(),
                     day_seconds=run.day_seconds, faults=faults,
                     decided_steps=ladder_steps(run.policy))
