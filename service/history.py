"""One timeline of a case, merged from the workflow and from PostgreSQL, each event once.

The workflow gives its `timeline` query, or the events written into its Temporal event history
across every continue-as-new run; PostgreSQL gives events, contacts, payments, tasks and legal
actions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts.activity_io import (
    CLOSE_TASK,
    CREATE_TASK,
    RECORD,
    RECORD_LEGAL_ACTION,
    RecordBatch,
    RecordResult,
)
from contracts.channels import CHANNELS
from contracts.messages import TimelineEvent
from contracts.names import Query, workflow_id_for
from service.case_calls import not_found, rpc_error
from service.shapes import as_utc, jsonable
from workflows.collection_workflow import CaseInput

log = logging.getLogger(__name__)

MAX_RUNS: Final = 10_000  # a guard against a corrupt continue-as-new chain


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    # "events" (PostgreSQL), "temporal" (the workflow, only what PostgreSQL lacks), "contacts",
    # "payments", "tasks", "legal_actions", "erasure_audit"
    source: str
    kind: str
    summary: str
    rule: str | None = None
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(), "source": self.source, "kind": self.kind,
            "summary": self.summary, "rule": self.rule, "actor": self.actor,
            "detail": jsonable(self.detail),
        }


def _event_key(kind: str, summary: str, at: datetime) -> tuple[str, str, datetime]:
    return kind, summary, as_utc(at)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _pg_history(pool: asyncpg.Pool, loan_id: str) -> list[HistoryEntry]:
    out: list[HistoryEntry] = []
    async with pool.acquire() as conn:
        for r in await conn.fetch(
            "SELECT kind, summary, rule, actor, detail, occurred_at FROM events "
            "WHERE loan_id = $1 ORDER BY occurred_at, id", loan_id,
        ):
            out.append(HistoryEntry(r["occurred_at"], "events", r["kind"], r["summary"], r["rule"],
                                    r["actor"], _json(r["detail"]) or {}))
        for r in await conn.fetch(
            "SELECT channel, decision, rule, reason, template, outcome, step_id, occurred_at "
            "FROM contacts WHERE loan_id = $1 ORDER BY occurred_at, id", loan_id,
        ):
            what = f"{r['channel']} {r['decision']}"
            if r["template"]:
                what += f" ({r['template']})"
            if r["reason"]:
                what += f": {r['reason']}"
            if r["outcome"] and r["outcome"] != r["decision"]:
                what += f"; outcome {r['outcome']}"
            out.append(HistoryEntry(
                r["occurred_at"], "contacts", f"contact_{r['decision']}", what, r["rule"], None,
                {"channel": r["channel"], "decision": r["decision"], "step": r["step_id"],
                 "template": r["template"], "reason": r["reason"], "outcome": r["outcome"]},
            ))
        for r in await conn.fetch(
            "SELECT payment_id, amount, currency, paid_at, allocation FROM payments "
            "WHERE loan_id = $1 ORDER BY paid_at, id", loan_id,
        ):
            allocation = _json(r["allocation"]) or {}
            split = ", ".join(f"{k} {v}" for k, v in allocation.items())
            out.append(HistoryEntry(
                r["paid_at"], "payments", "payment",
                f"payment {r['payment_id']} of {r['amount']} {r['currency'].strip()} received"
                + (f" ({split})" if split else ""),
                None, None,
                {"payment_id": r["payment_id"], "amount": r["amount"],
                 "currency": r["currency"].strip(), "allocation": allocation},
            ))
        for r in await conn.fetch(
            "SELECT task_key, kind, step_id, priority, due_by, status, outcome, agent, note, "
            "reason, breach_rule, created_at, completed_at FROM tasks WHERE loan_id = $1 "
            "ORDER BY created_at, id",
            loan_id,
        ):
            detail = {"task_key": r["task_key"], "step": r["step_id"], "status": r["status"]}
            out.append(HistoryEntry(
                r["created_at"], "tasks", "task_created",
                f"{r['kind']} task for step {r['step_id']} (priority {r['priority']}), due by "
                f"{as_utc(r['due_by']):%Y-%m-%d %H:%M} UTC; now {r['status']}",
                None, None, detail,
            ))
            if r["completed_at"] is not None:
                note = f" ({r['note']})" if r["note"] else ""
                # Why it was withdrawn (a hold, a cease, the case's end); the rule a call broke.
                why = r["reason"] if r["status"] == "withdrawn" and r["reason"] else r["outcome"]
                out.append(HistoryEntry(
                    r["completed_at"], "tasks", f"task_{r['status']}",
                    f"{r['kind']} task for step {r['step_id']} {r['status']}: {why}{note}",
                    r["breach_rule"], r["agent"], {**detail, "outcome": r["outcome"]},
                ))
        for r in await conn.fetch(
            "SELECT action, documents, created_at FROM legal_actions "
            "WHERE loan_id = $1 ORDER BY created_at, id", loan_id,
        ):
            documents = _json(r["documents"]) or []
            out.append(HistoryEntry(
                r["created_at"], "legal_actions", "legal_action",
                f"{r['action']}: {len(documents)} document(s) generated", None, None,
                {"action": r["action"], "documents": documents},
            ))
        # Issue 18: the borrower's personal data erased (a deletion request, the retention purge).
        for r in await conn.fetch(
            "SELECT kind, actor, reason, what, at FROM erasure_audit "
            "WHERE $1 = ANY(loan_ids) ORDER BY at, id", loan_id,
        ):
            why = "deletion request" if r["kind"] == "erasure" else "retention ended"
            out.append(HistoryEntry(
                r["at"], "erasure_audit", "borrower_erased",
                f"borrower's personal data erased ({why}: {r['reason']})", None, r["actor"],
                {"kind": r["kind"], "erased_from": list(r["what"])},
            ))
    return out


def _timeline_entry(kind: str, summary: str, at: datetime, rule: str | None, actor: str | None,
                    detail: dict[str, Any] | None) -> HistoryEntry:
    return HistoryEntry(as_utc(at), "temporal", kind, summary, rule, actor, dict(detail or {}))


@dataclass
class _Carried:
    """The writes in an action's input (SendInput, TaskInput, TaskClose, LegalInput)."""

    records: RecordBatch | None = None
    on_sent: RecordBatch | None = None
    on_created: RecordBatch | None = None


@dataclass
class _Succeeded:
    """Whether an action wrote what it staged: a send sent (SendResult), a task created."""

    status: str = ""
    created: bool = False


_CARRIERS: Final = {CREATE_TASK, CLOSE_TASK, RECORD_LEGAL_ACTION,
                    *(spec.activity for spec in CHANNELS.values() if spec.activity)}


async def _decode(client: Client, payloads: Sequence[Any], typ: type) -> Any | None:
    try:
        values = await client.data_converter.decode(payloads, [typ])
    except Exception as err:  # another process's keys, or a payload of an older shape
        log.warning("cannot decode a %s payload from the event history: %s", typ.__name__, err)
        return None
    return values[0] if values else None


LOCAL_ACTIVITY_MARKER: Final = "core_local_activity"


def _local_activity_type(attrs: Any) -> str | None:
    """The activity type in a local-activity marker (its "data" detail is plain JSON)."""
    if "data" not in attrs.details or "result" not in attrs.details:
        return None
    try:
        kind = json.loads(attrs.details["data"].payloads[0].data).get("activity_type")
    except (IndexError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


async def _events_of_run(client: Client, events: Sequence[Any]) -> list[HistoryEntry]:
    """The timeline a run carried in (its input and its continue-as-new state) and the events it
    wrote through the `record` activity (its input, or its result when it ran as a local
    activity), decoded from the run's event history."""
    found: list[HistoryEntry] = []

    def from_state(inp: CaseInput | None) -> None:
        if inp is not None and inp.state is not None:
            found.extend(_timeline_entry(t.kind, t.summary, t.at, t.rule, t.actor, t.detail)
                         for t in inp.state.timeline)
            found.extend(
                _timeline_entry(e.kind, e.summary, e.occurred_at, e.rule, e.actor, e.detail)
                for e in inp.state.pending_events)

    def from_batch(batch: RecordBatch | None) -> None:
        if batch is not None:
            found.extend(_timeline_entry(e.kind, e.summary, e.occurred_at, e.rule, e.actor,
                                         e.detail) for e in batch.events)

    # scheduled event id -> what the activity writes if it succeeds (SendInput.on_sent, ...)
    staged: dict[int, RecordBatch] = {}
    for ev in events:
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = ev.workflow_execution_started_event_attributes
            from_state(await _decode(client, attrs.input.payloads, CaseInput))
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == RECORD:
                from_batch(await _decode(client, attrs.input.payloads, RecordBatch))
            elif attrs.activity_type.name in _CARRIERS:
                # Writes that travelled with an action (workflows/carried_writes.py).
                carried = await _decode(client, attrs.input.payloads, _Carried)
                if carried is not None:
                    from_batch(carried.records)
                    if (then := carried.on_sent or carried.on_created) is not None:
                        staged[ev.event_id] = then
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = ev.activity_task_completed_event_attributes
            then = staged.pop(attrs.scheduled_event_id, None)
            if then is not None:
                done = await _decode(client, attrs.result.payloads, _Succeeded)
                if done is not None and (done.status == "sent" or done.created):
                    from_batch(then)
        elif ev.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            # A `record` run as a local activity: its result carries the events it wrote.
            attrs = ev.marker_recorded_event_attributes
            if attrs.marker_name == LOCAL_ACTIVITY_MARKER and _local_activity_type(attrs) == RECORD:
                result = await _decode(client, attrs.details["result"].payloads, RecordResult)
                if result is not None:
                    found.extend(_timeline_entry(e.kind, e.summary, e.occurred_at, e.rule, e.actor,
                                                 e.detail) for e in result.events)
        elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            attrs = ev.workflow_execution_continued_as_new_event_attributes
            from_state(await _decode(client, attrs.input.payloads, CaseInput))
    return found


async def _runs(client: Client, workflow_id: str) -> list[list[Any]]:
    """The event histories of every run of the current continue-as-new chain, oldest first.

    Walks back from the latest run through each run's `continued_execution_run_id`: needs no
    visibility store (the time-skipping test server has none)."""
    runs: list[list[Any]] = []
    run_id: str | None = None
    seen: set[str] = set()
    while len(runs) < MAX_RUNS:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [ev async for ev in handle.fetch_history_events()]
        if not events:
            break
        runs.append(events)
        previous = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not previous or previous in seen:
            break
        seen.add(previous)
        run_id = previous
    runs.reverse()
    return runs


async def run_count(client: Client, loan_id: str) -> int:
    """How many runs the case's continue-as-new chain has (1 if it never continued as new)."""
    try:
        return len(await _runs(client, workflow_id_for(loan_id)))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return 0
        raise


async def _temporal_history(
    client: Client, loan_id: str, *, use_query: bool, query_timeout: float
) -> tuple[bool, list[HistoryEntry]]:
    """(the workflow exists, what the workflow itself knows of its history)."""
    workflow_id = workflow_id_for(loan_id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False, []
        raise rpc_error(err, loan_id) from None
    if use_query:
        try:
            async with asyncio.timeout(query_timeout):
                timeline: list[TimelineEvent] = await handle.query(
                    Query.TIMELINE, result_type=list[TimelineEvent],
                    rpc_timeout=timedelta(seconds=query_timeout))
            return True, [_timeline_entry(t.kind, t.summary, t.at, t.rule, t.actor, t.detail)
                          for t in timeline]
        except Exception as err:  # no worker, still opening, a codec mismatch: read the history
            log.info("timeline query for %s failed (%s); reading the event history", loan_id, err)
    try:
        entries: list[HistoryEntry] = []
        for events in await _runs(client, workflow_id):
            entries.extend(await _events_of_run(client, events))
        return True, entries
    except RPCError as err:
        raise rpc_error(err, loan_id) from None


_SOURCE_ORDER: Final = {"events": 0, "temporal": 0, "legal_actions": 1, "tasks": 2, "contacts": 3,
                        "payments": 4}


async def history(
    client: Client | None, pool: asyncpg.Pool, loan_id: str, *, use_query: bool = True,
    query_timeout: float = 5.0,
) -> list[HistoryEntry]:
    """Everything that happened to a case, oldest first, each domain event once.

    PostgreSQL gives the events the workflow wrote and the rows of contacts, payments, tasks and
    legal actions. The workflow gives its timeline: by its `timeline` query when a worker answers
    within `query_timeout` seconds (it carries the whole timeline through continue-as-new), else
    from the events in its Temporal event history, run after run. A workflow event is added only
    when PostgreSQL has no event with the same kind, summary and time (not written yet, or lost).
    With `client` None (Temporal unreachable) only PostgreSQL is read.
    Raises `NotFound` for a loan with neither a workflow nor any row.
    """
    temporal: list[HistoryEntry]
    if client is None:
        pg_entries, (exists, temporal) = await _pg_history(pool, loan_id), (False, [])
    else:
        pg_entries, (exists, temporal) = await asyncio.gather(
            _pg_history(pool, loan_id),
            _temporal_history(client, loan_id, use_query=use_query, query_timeout=query_timeout),
        )
    if not exists and not pg_entries:
        raise not_found(loan_id)
    known = {_event_key(e.kind, e.summary, e.at) for e in pg_entries if e.source == "events"}
    merged = list(pg_entries)
    for entry in temporal:
        key = _event_key(entry.kind, entry.summary, entry.at)
        if key not in known:
            known.add(key)
            merged.append(entry)
    indexed = list(enumerate(merged))
    indexed.sort(key=lambda p: (as_utc(p[1].at), _SOURCE_ORDER.get(p[1].source, 9), p[0]))
    return [e for _, e in indexed]
