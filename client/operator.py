"""What an operator asks of the whole book: lists of cases, one case's history, portfolio figures.

Three questions, each a plain async function (nothing here prints; `client/operator_cli.py` shows
the answers):

- `list_cases` / `list_cases_db`: cases matching filters, from Temporal visibility (the search
  attributes the workflows upsert) or from the `cases` table. `visibility_query` builds the same
  filter as a Temporal list query, for `temporal workflow list --query` and the Web UI.
- `history`: one timeline of a case, merged from the workflow (its `timeline` query, or the events
  written into its Temporal event history across every continue-as-new run) and from PostgreSQL
  (events, contacts, payments, tasks, legal actions), each event once.
- `portfolio_report`: recovery, cure, roll and promise-kept rates per policy version and segment,
  and a monthly series, aggregated in SQL (as of now, read from a rollup the database keeps
  current: infra/migrations/003_report_rollup.sql); `render_chart` draws it.

Money is `Decimal`. Rates are `Decimal` rounded to 4 places (`None` where the denominator is 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Final

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from client.book import BOOK_PREFIX, clear_book, seed_book
from client.operations import OperationError
from contracts.activity_io import RECORD, RecordBatch, RecordResult
from contracts.case_io import CollectionInput
from workflows.collection_workflow import CaseInput, CollectionWorkflow
from contracts.messages import CaseState, Stage, TimelineEvent
from contracts.names import (
    ASSIGNED_AGENT,
    CASE_STATE,
    CURRENCY,
    DAYS_PAST_DUE,
    OUTSTANDING,
    POLICY_VERSION,
    STAGE,
    loan_id_from,
    workflow_id_for,
)

__all__ = [
    "BOOK_PREFIX",
    "ROLL_TRANSITIONS",
    "CaseRow",
    "FilterError",
    "HistoryEntry",
    "Report",
    "SegmentFigures",
    "SeriesPoint",
    "clear_book",
    "history",
    "list_cases",
    "list_cases_db",
    "portfolio_report",
    "render_chart",
    "seed_book",
    "visibility_query",
]

log = logging.getLogger(__name__)

WORKFLOW_TYPE: Final = CollectionWorkflow.__name__
# The ladder's stages from best to worst; roll rates are measured along this order.
STAGE_RANKS: Final = ("pre_due", "early", "middle", "late", "legal", "written_off")
ROLL_TRANSITIONS: Final = tuple(
    f"{a}->{b}" for a, b in zip(STAGE_RANKS, STAGE_RANKS[1:], strict=False))
CURED_STATES: Final = (CaseState.PAID.value, CaseState.SETTLED.value)
RATE_PLACES: Final = Decimal("0.0001")
MAX_LIMIT: Final = 10_000
MAX_RUNS: Final = 10_000  # a guard against a corrupt continue-as-new chain


class FilterError(ValueError):
    """A filter value that cannot be used (wrong type, out of range, or unsafe characters)."""


# =============================================================================== list


@dataclass(frozen=True)
class CaseRow:
    loan_id: str
    state: str | None
    stage: str | None
    days_past_due: int | None
    # From Temporal: whole currency units (the search attribute); from PostgreSQL: to the cent.
    outstanding: Decimal | None
    currency: str | None
    agent: str | None
    policy_version: str | None  # "name@version"


@dataclass(frozen=True)
class _Filters:
    stage: str | None = None
    state: str | None = None
    min_outstanding: int | None = None
    max_outstanding: int | None = None
    min_dpd: int | None = None
    max_dpd: int | None = None
    agent: str | None = None
    policy_name: str | None = None
    policy_version: str | None = None  # None with a policy_name: any version of that policy
    currency: str | None = None


_AGENT_RE = re.compile(r"[\w .@:-]{1,64}")  # \w is Unicode: agent names may be 王芳
_POLICY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_POLICY_VERSION_RE = re.compile(r"[A-Za-z0-9._+-]{1,64}", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
_WHOLE_RE = re.compile(r"[+-]?[0-9]{1,15}", re.ASCII)
_MAX_DPD = 100_000


def _whole(value: Any, name: str, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise FilterError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise FilterError(f"{name} must be a whole number of currency units, got {value}")
        number = int(value)
    elif isinstance(value, str) and _WHOLE_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise FilterError(f"{name} must be a whole number, got {value!r}")
    if abs(number) > 10**15:
        raise FilterError(f"{name} is out of range: {number}")
    if minimum is not None and number < minimum:
        raise FilterError(f"{name} must be at least {minimum}, got {number}")
    return number


def _choice(value: Any, name: str, allowed: Iterable[str]) -> str | None:
    if value is None:
        return None
    allowed = list(allowed)
    text = value.value if isinstance(value, (Stage, CaseState)) else value
    if not isinstance(text, str) or text not in allowed:
        raise FilterError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return text


def _matching(value: Any, name: str, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise FilterError(f"{name} must be {what}; got {value!r}")
    return value


def _filters(
    *, stage: Any = None, state: Any = None, min_outstanding: Any = None,
    max_outstanding: Any = None, min_dpd: Any = None, max_dpd: Any = None, agent: Any = None,
    policy_version: Any = None, currency: Any = None,
) -> _Filters:
    """Validate every filter value; nothing unvalidated ever reaches a query."""
    lo = _whole(min_outstanding, "min_outstanding", minimum=0)
    hi = _whole(max_outstanding, "max_outstanding", minimum=0)
    if lo is not None and hi is not None and lo > hi:
        raise FilterError(f"min_outstanding {lo} exceeds max_outstanding {hi}")
    dlo = _whole(min_dpd, "min_dpd", minimum=-_MAX_DPD)
    dhi = _whole(max_dpd, "max_dpd", minimum=-_MAX_DPD)
    if (dlo is not None and dlo > _MAX_DPD) or (dhi is not None and dhi > _MAX_DPD):
        raise FilterError(f"days past due must lie within ±{_MAX_DPD}")
    if dlo is not None and dhi is not None and dlo > dhi:
        raise FilterError(f"min_dpd {dlo} exceeds max_dpd {dhi}")
    name = version = None
    if policy_version is not None:
        if not isinstance(policy_version, str):
            raise FilterError(f"policy_version must be text, got {policy_version!r}")
        name, sep, version = policy_version.partition("@")
        what = "name@version or a policy name"
        _matching(name, "policy_version", _POLICY_NAME_RE, what)
        if sep:
            _matching(version, "policy_version", _POLICY_VERSION_RE, what)
        else:
            version = None
    if isinstance(agent, str) and agent != agent.strip():
        raise FilterError(f"agent must not start or end with spaces; got {agent!r}")
    return _Filters(
        stage=_choice(stage, "stage", [s.value for s in Stage]),
        state=_choice(state, "state", [s.value for s in CaseState]),
        min_outstanding=lo, max_outstanding=hi, min_dpd=dlo, max_dpd=dhi,
        agent=_matching(agent, "agent", _AGENT_RE, "1-64 letters, digits, spaces or . _ @ : -"),
        policy_name=name, policy_version=version,
        currency=_matching(currency, "currency", _CURRENCY_RE, "an ISO 4217 code such as CNY"),
    )


def _quote(text: str) -> str:
    # Values are validated against allow-lists that exclude quotes and backslashes; the checks
    # here keep that promise even if a pattern is loosened later.
    if any(ch in text for ch in "'\"\\") or any(ord(ch) < 32 for ch in text):
        raise FilterError(f"unsafe characters in {text!r}")
    return f"'{text}'"


def _visibility(f: _Filters) -> str:
    parts = [f"WorkflowType = {_quote(WORKFLOW_TYPE)}",
             # A continued-as-new run keeps its search attributes: list only the live run.
             "ExecutionStatus != 'ContinuedAsNew'"]
    if f.stage is not None:
        parts.append(f"{STAGE.name} = {_quote(f.stage)}")
    if f.state is not None:
        parts.append(f"{CASE_STATE.name} = {_quote(f.state)}")
    if f.min_outstanding is not None:
        parts.append(f"{OUTSTANDING.name} >= {f.min_outstanding:d}")
    if f.max_outstanding is not None:
        parts.append(f"{OUTSTANDING.name} <= {f.max_outstanding:d}")
    if f.min_dpd is not None:
        parts.append(f"{DAYS_PAST_DUE.name} >= {f.min_dpd:d}")
    if f.max_dpd is not None:
        parts.append(f"{DAYS_PAST_DUE.name} <= {f.max_dpd:d}")
    if f.agent is not None:
        parts.append(f"{ASSIGNED_AGENT.name} = {_quote(f.agent)}")
    if f.policy_name is not None:
        if f.policy_version is not None:
            parts.append(f"{POLICY_VERSION.name} = {_quote(f'{f.policy_name}@{f.policy_version}')}")
        else:
            parts.append(f"{POLICY_VERSION.name} STARTS_WITH {_quote(f'{f.policy_name}@')}")
    if f.currency is not None:
        parts.append(f"{CURRENCY.name} = {_quote(f.currency)}")
    return " AND ".join(parts)


def visibility_query(
    *, stage: str | Stage | None = None, state: str | CaseState | None = None,
    min_outstanding: int | Decimal | None = None, max_outstanding: int | Decimal | None = None,
    min_dpd: int | None = None, max_dpd: int | None = None, agent: str | None = None,
    policy_version: str | None = None, currency: str | None = None,
) -> str:
    """A Temporal list filter for the cases matching every given filter.

    Outstanding bounds are whole currency units, both inclusive, compared with the
    `OutstandingAmount` search attribute (the balance rounded down). `policy_version` is
    `name@version`, or a bare policy name for any of its versions. Raises `FilterError` (a
    `ValueError`) for a value of the wrong type or with characters a filter cannot carry safely.
    """
    return _visibility(_filters(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency,
    ))


def _limit(limit: Any) -> int:
    number = _whole(limit, "limit", minimum=1)
    assert number is not None
    if number > MAX_LIMIT:
        raise FilterError(f"limit must be at most {MAX_LIMIT}, got {number}")
    return number


async def list_cases(
    client: Client, *, limit: int = 100, stage: str | Stage | None = None,
    state: str | CaseState | None = None, min_outstanding: int | Decimal | None = None,
    max_outstanding: int | Decimal | None = None, min_dpd: int | None = None,
    max_dpd: int | None = None, agent: str | None = None, policy_version: str | None = None,
    currency: str | None = None,
) -> list[CaseRow]:
    """Cases from Temporal visibility (eventually consistent: a second or so behind the cases).

    Most recently started first. Fields are None until the case has upserted its attributes.
    """
    query = visibility_query(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency,
    )
    limit = _limit(limit)
    rows: list[CaseRow] = []
    seen: set[str] = set()
    try:
        async for wf in client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
            if wf.id in seen:
                continue
            seen.add(wf.id)
            sa = wf.typed_search_attributes
            amount = sa.get(OUTSTANDING)
            rows.append(CaseRow(
                loan_id=loan_id_from(wf.id), state=sa.get(CASE_STATE), stage=sa.get(STAGE),
                days_past_due=sa.get(DAYS_PAST_DUE),
                outstanding=None if amount is None else Decimal(amount),
                currency=sa.get(CURRENCY), agent=sa.get(ASSIGNED_AGENT),
                policy_version=sa.get(POLICY_VERSION),
            ))
    except RPCError as err:
        raise OperationError(
            f"Temporal refused the list query ({err.status.name}): {err.message}") from None
    return rows


def _sql_where(f: _Filters) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.stage is not None:
        conds.append(f"stage = {arg(f.stage)}")
    if f.state is not None:
        conds.append(f"state = {arg(f.state)}")
    # Whole units, as the search attribute: floor(outstanding) >= lo and floor(outstanding) <= hi.
    if f.min_outstanding is not None:
        conds.append(f"outstanding >= {arg(Decimal(f.min_outstanding))}")
    if f.max_outstanding is not None:
        conds.append(f"outstanding < {arg(Decimal(f.max_outstanding + 1))}")
    if f.min_dpd is not None:
        conds.append(f"days_past_due >= {arg(f.min_dpd)}")
    if f.max_dpd is not None:
        conds.append(f"days_past_due <= {arg(f.max_dpd)}")
    if f.agent is not None:
        conds.append(f"assigned_agent = {arg(f.agent)}")
    if f.policy_name is not None:
        conds.append(f"policy_name = {arg(f.policy_name)}")
        if f.policy_version is not None:
            conds.append(f"policy_version = {arg(f.policy_version)}")
    if f.currency is not None:
        conds.append(f"currency = {arg(f.currency)}")
    return (" AND ".join(conds) or "TRUE"), args


async def list_cases_db(
    pool: asyncpg.Pool, *, limit: int = 100, stage: str | Stage | None = None,
    state: str | CaseState | None = None, min_outstanding: int | Decimal | None = None,
    max_outstanding: int | Decimal | None = None, min_dpd: int | None = None,
    max_dpd: int | None = None, agent: str | None = None, policy_version: str | None = None,
    currency: str | None = None,
) -> list[CaseRow]:
    """Cases from the `cases` table (as of the last record the workflows wrote), the same filters
    with the same meaning as `list_cases`; largest balance first. One indexed query."""
    f = _filters(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency,
    )
    where, args = _sql_where(f)
    args.append(_limit(limit))
    rows = await pool.fetch(
        f"""
        SELECT loan_id, state, stage, days_past_due, outstanding, currency, assigned_agent,
               policy_name || '@' || policy_version AS policy_version
        FROM cases WHERE {where}
        ORDER BY outstanding DESC, loan_id
        LIMIT ${len(args)}
        """,
        *args,
    )
    return [
        CaseRow(loan_id=r["loan_id"], state=r["state"], stage=r["stage"],
                days_past_due=r["days_past_due"], outstanding=r["outstanding"],
                currency=r["currency"], agent=r["assigned_agent"],
                policy_version=r["policy_version"])
        for r in rows
    ]


# ============================================================================ history


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    # "events" (PostgreSQL), "temporal" (the workflow, only what PostgreSQL lacks), "contacts",
    # "payments", "tasks", "legal_actions"
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
            "detail": _jsonable(self.detail),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _event_key(kind: str, summary: str, at: datetime) -> tuple[str, str, datetime]:
    return kind, summary, _utc(at)


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
            "created_at, completed_at FROM tasks WHERE loan_id = $1 ORDER BY created_at, id",
            loan_id,
        ):
            detail = {"task_key": r["task_key"], "step": r["step_id"], "status": r["status"]}
            out.append(HistoryEntry(
                r["created_at"], "tasks", "task_created",
                f"{r['kind']} task for step {r['step_id']} (priority {r['priority']}), due by "
                f"{_utc(r['due_by']):%Y-%m-%d %H:%M} UTC; now {r['status']}",
                None, None, detail,
            ))
            if r["completed_at"] is not None:
                note = f" ({r['note']})" if r["note"] else ""
                out.append(HistoryEntry(
                    r["completed_at"], "tasks", f"task_{r['status']}",
                    f"{r['kind']} task for step {r['step_id']} {r['status']}: {r['outcome']}{note}",
                    None, r["agent"], {**detail, "outcome": r["outcome"]},
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
    return out


def _timeline_entry(kind: str, summary: str, at: datetime, rule: str | None, actor: str | None,
                    detail: dict[str, Any] | None) -> HistoryEntry:
    return HistoryEntry(_utc(at), "temporal", kind, summary, rule, actor, dict(detail or {}))


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
        return json.loads(attrs.details["data"].payloads[0].data).get("activity_type")
    except (IndexError, ValueError, AttributeError):
        return None


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

    for ev in events:
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = ev.workflow_execution_started_event_attributes
            from_state(await _decode(client, attrs.input.payloads, CaseInput))
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == RECORD:
                batch = await _decode(client, attrs.input.payloads, RecordBatch)
                if batch is not None:
                    found.extend(_timeline_entry(e.kind, e.summary, e.occurred_at, e.rule, e.actor,
                                                 e.detail) for e in batch.events)
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
        raise OperationError(
            f"loan {loan_id}: Temporal refused the request ({err.status.name})") from None
    if use_query:
        try:
            async with asyncio.timeout(query_timeout):
                timeline: list[TimelineEvent] = await handle.query(
                    CollectionWorkflow.timeline, rpc_timeout=timedelta(seconds=query_timeout)
                )
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
        raise OperationError(
            f"loan {loan_id}: cannot read the event history ({err.status.name})") from None


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
    Raises `OperationError` for a loan with neither a workflow nor any row.
    """
    if client is None:
        pg_entries, (exists, temporal) = await _pg_history(pool, loan_id), (False, [])
    else:
        pg_entries, (exists, temporal) = await asyncio.gather(
            _pg_history(pool, loan_id),
            _temporal_history(client, loan_id, use_query=use_query, query_timeout=query_timeout),
        )
    if not exists and not pg_entries:
        raise OperationError(f"no collection case for loan {loan_id}")
    known = {_event_key(e.kind, e.summary, e.at) for e in pg_entries if e.source == "events"}
    merged = list(pg_entries)
    for entry in temporal:
        key = _event_key(entry.kind, entry.summary, entry.at)
        if key not in known:
            known.add(key)
            merged.append(entry)
    indexed = list(enumerate(merged))
    indexed.sort(key=lambda p: (_utc(p[1].at), _SOURCE_ORDER.get(p[1].source, 9), p[0]))
    return [e for _, e in indexed]


# ============================================================================= report


def rate(numerator: int | Decimal, denominator: int | Decimal) -> Decimal | None:
    """numerator / denominator rounded half-up to 4 places; None when the denominator is 0."""
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


@dataclass
class SegmentFigures:
    policy_name: str
    policy_version: str
    segment: str
    currency: str
    cases: int
    placed: Decimal
    collected: Decimal
    outstanding: Decimal
    cured: int
    promises_kept: int
    promises_broken: int
    contacts_sent: int
    reached: dict[str, int]  # stage -> cases that entered it
    rolled: dict[str, int]  # "x->y" -> of those that entered x, cases whose next stage was worse
    by_state: dict[str, int]

    @property
    def recovery_rate(self) -> Decimal | None:
        return rate(self.collected, self.placed)

    @property
    def cure_rate(self) -> Decimal | None:
        return rate(self.cured, self.cases)

    @property
    def roll_rates(self) -> dict[str, Decimal | None]:
        return {t: rate(self.rolled.get(t, 0), self.reached.get(t.split("->")[0], 0))
                for t in ROLL_TRANSITIONS}

    @property
    def promise_kept_rate(self) -> Decimal | None:
        return rate(self.promises_kept, self.promises_kept + self.promises_broken)

    @property
    def contacts_per_cure(self) -> Decimal | None:
        return rate(self.contacts_sent, self.cured)

    def to_json(self) -> dict[str, Any]:
        return _jsonable({
            **asdict(self), "recovery_rate": self.recovery_rate, "cure_rate": self.cure_rate,
            "roll_rates": self.roll_rates, "promise_kept_rate": self.promise_kept_rate,
            "contacts_per_cure": self.contacts_per_cure,
        })


@dataclass
class SeriesPoint:
    """One month of one policy version: flows in the month and the rates they give."""

    month: date
    policy_name: str
    policy_version: str
    currency: str
    opened: int
    placed: Decimal  # placed in cases opened this month
    collected: Decimal  # paid this month
    cumulative_placed: Decimal
    cumulative_collected: Decimal
    in_stage: dict[str, int]  # stage -> cases in it at some time during the month
    rolled: dict[str, int]  # transition -> of those, cases that moved to a worse stage this month

    @property
    def recovery_rate(self) -> Decimal | None:
        """Collected to date over placed to date (cumulative recovery)."""
        return rate(self.cumulative_collected, self.cumulative_placed)

    @property
    def roll_rates(self) -> dict[str, Decimal | None]:
        return {t: rate(self.rolled.get(t, 0), self.in_stage.get(t.split("->")[0], 0))
                for t in ROLL_TRANSITIONS}

    def to_json(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "recovery_rate": self.recovery_rate,
                          "roll_rates": self.roll_rates})


@dataclass
class Report:
    as_of: datetime
    rows: list[SegmentFigures]
    series: list[SeriesPoint]

    def by_policy_version(self) -> list[SegmentFigures]:
        """The rows summed over segments, one per policy version (and currency)."""
        groups: dict[tuple[str, str, str], list[SegmentFigures]] = defaultdict(list)
        for r in self.rows:
            groups[(r.policy_name, r.policy_version, r.currency)].append(r)
        out = []
        for (name, version, currency), rows in sorted(groups.items()):
            def total(attr: str, rows: list[SegmentFigures] = rows) -> Any:
                return sum((getattr(r, attr) for r in rows), start=type(getattr(rows[0], attr))())

            def merged(attr: str, rows: list[SegmentFigures] = rows) -> dict[str, int]:
                acc: dict[str, int] = defaultdict(int)
                for r in rows:
                    for k, v in getattr(r, attr).items():
                        acc[k] += v
                return dict(acc)

            out.append(SegmentFigures(
                policy_name=name, policy_version=version, segment="*", currency=currency,
                cases=total("cases"), placed=total("placed"), collected=total("collected"),
                outstanding=total("outstanding"), cured=total("cured"),
                promises_kept=total("promises_kept"), promises_broken=total("promises_broken"),
                contacts_sent=total("contacts_sent"), reached=merged("reached"),
                rolled=merged("rolled"), by_state=merged("by_state"),
            ))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "rows": [r.to_json() for r in self.rows],
            "policy_versions": [r.to_json() for r in self.by_policy_version()],
            "series": [p.to_json() for p in self.series],
        }


_STATES: Final = [s.value for s in CaseState]
_RANK_CASE: Final = "CASE {} " + " ".join(
    f"WHEN '{s}' THEN {i}" for i, s in enumerate(STAGE_RANKS)) + " END"
_SCOPE: Final = "c.opened_at <= $1 AND ($2::text IS NULL OR c.policy_name = $2)"
_KEYS: Final = "c.policy_name, c.policy_version, c.segment, c.currency"

# Five aggregations, each one pass over one table joined to `cases`; Python adds up their small
# results. Months are calendar months in UTC. A case closed after `as_of` counts as active.
_CASES_SQL: Final = f"""
SELECT {_KEYS}, date_trunc('month', c.opened_at AT TIME ZONE 'UTC')::date AS month,
       CASE WHEN c.closed_at > $1 THEN 'active' ELSE c.state END AS state,
       count(*) AS cases, sum(c.amount_placed) AS placed, sum(c.outstanding) AS outstanding
FROM cases c
WHERE {_SCOPE}
GROUP BY 1, 2, 3, 4, 5, 6
"""

_PAYMENTS_SQL: Final = f"""
SELECT {_KEYS}, date_trunc('month', p.paid_at AT TIME ZONE 'UTC')::date AS month,
       sum(p.amount) AS collected
FROM payments p JOIN cases c ON c.loan_id = p.loan_id
WHERE {_SCOPE} AND p.paid_at <= $1
GROUP BY 1, 2, 3, 4, 5
"""

_PROMISES_SQL: Final = f"""
SELECT {_KEYS}, e.kind, count(*) AS n
FROM events e JOIN cases c ON c.loan_id = e.loan_id
WHERE {_SCOPE} AND e.kind IN ('promise_kept', 'promise_broken') AND e.occurred_at <= $1
GROUP BY 1, 2, 3, 4, 5
"""

_CONTACTS_SQL: Final = f"""
SELECT {_KEYS}, count(*) AS n
FROM contacts k JOIN cases c ON c.loan_id = k.loan_id
WHERE {_SCOPE} AND k.decision = 'sent' AND k.occurred_at <= $1
GROUP BY 1, 2, 3, 4
"""

# One span per stage a case entered: from the stage_history row that entered it to the next row
# of that case (a worse stage, or `closed`), cut short when the case closed (paid, settled) and at
# `as_of`. `rolled`: the next row is a worse stage. The workflow only ever moves a case forward and
# writes each change once, so each case has at most one span per stage.
_SPANS_SQL: Final = f"""
WITH s AS (
    SELECT loan_id, {_RANK_CASE.format("to_stage")} AS rank, occurred_at AS entered_at,
           lead(occurred_at) OVER w AS left_at,
           {_RANK_CASE.format("lead(to_stage) OVER w")} AS next_rank
    FROM stage_history
    WHERE occurred_at <= $1
    WINDOW w AS (PARTITION BY loan_id ORDER BY occurred_at, id)
)
SELECT {_KEYS}, s.rank,
       date_trunc('month', s.entered_at AT TIME ZONE 'UTC')::date AS first_month,
       date_trunc('month', LEAST(coalesce(s.left_at, $1), coalesce(c.closed_at, $1), $1)
                  AT TIME ZONE 'UTC')::date AS last_month,
       coalesce(s.next_rank > s.rank, false) AS rolled,
       count(*) AS n
FROM s JOIN cases c ON c.loan_id = s.loan_id
WHERE {_SCOPE} AND s.rank IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""

# Large enough for the hash tables of a 100,000-case book to stay in memory; this transaction only.
_REPORT_WORK_MEM: Final = "64MB"

# The same five aggregations from the rollup (infra/migrations/003_report_rollup.sql): the
# groups triggers keep current, plus the deltas not folded in yet, read in one snapshot. They hold
# the figures as of a time after every row they count (`report_loans.latest`); a report as of an
# earlier time scans.
_HORIZON_SQL: Final = "SELECT max(latest) FROM report_loans"
_POLICY_HORIZON_SQL: Final = "SELECT max(latest) FROM report_loans WHERE policy_name = $1"
_ROLLUP_SQL: Final = """
SELECT policy_name, policy_version, segment, currency, part, month, state, rank,
       CASE WHEN last_month = 'infinity' THEN report_month($1) ELSE last_month END AS last_month,
       rolled, sum(n)::bigint AS n, sum(placed) AS placed, sum(outstanding) AS outstanding,
       sum(amount) AS amount
FROM (SELECT policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
             rolled, n, placed, outstanding, amount FROM report_rollup
      UNION ALL
      SELECT policy_name, policy_version, segment, currency, part, month, state, rank, last_month,
             rolled, n, placed, outstanding, amount FROM report_delta) r
WHERE $2::text IS NULL OR policy_name = $2
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
HAVING sum(n) <> 0
"""

_Rows = list[Mapping[str, Any]]


async def _rollup_rows(
    pool: asyncpg.Pool, as_of: datetime, policy_name: str | None,
) -> tuple[_Rows, _Rows, _Rows, _Rows, _Rows] | None:
    """The rows of the five aggregations from the rollup, or None when it cannot answer."""
    try:
        async with (pool.acquire() as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True)):
            if policy_name is None:
                horizon = await conn.fetchval(_HORIZON_SQL)
            else:
                horizon = await conn.fetchval(_POLICY_HORIZON_SQL, policy_name)
            if horizon is not None and horizon > as_of:
                return None
            rows = await conn.fetch(_ROLLUP_SQL, as_of, policy_name)
    except asyncpg.UndefinedTableError:
        log.warning("no report rollup in this database (migration 003 not applied); scanning")
        return None
    cases: _Rows = []
    payments: _Rows = []
    promises: _Rows = []
    contacts: _Rows = []
    spans: _Rows = []
    for r in rows:
        key = {k: r[k] for k in ("policy_name", "policy_version", "segment", "currency")}
        part = r["part"]
        if part == "case":
            cases.append({**key, "month": r["month"], "state": r["state"], "cases": r["n"],
                          "placed": r["placed"], "outstanding": r["outstanding"]})
        elif part == "payment":
            payments.append({**key, "month": r["month"], "collected": r["amount"]})
        elif part in ("promise_kept", "promise_broken"):
            promises.append({**key, "kind": part, "n": r["n"]})
        elif part == "contact_sent":
            contacts.append({**key, "n": r["n"]})
        elif part == "span":
            spans.append({**key, "rank": r["rank"], "first_month": r["month"],
                          "last_month": r["last_month"], "rolled": r["rolled"], "n": r["n"]})
    return cases, payments, promises, contacts, spans



def _month_range(first: date, last: date) -> list[date]:
    months = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        months.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


_SegKey = tuple[str, str, str, str]  # policy name, version, segment, currency
_SerKey = tuple[str, str, str]  # policy name, version, currency


def _seg_key(r: Mapping[str, Any]) -> _SegKey:
    return r["policy_name"], r["policy_version"], r["segment"], r["currency"].strip()


async def portfolio_report(
    pool: asyncpg.Pool, *, as_of: datetime | None = None, policy_name: str | None = None,
    rollup: bool = True,
) -> Report:
    """Figures per (policy name, policy version, segment, currency) as of `as_of` (default: now),
    from PostgreSQL, plus a monthly series per policy version.

    - recovery rate: payments made by `as_of` over the amount placed;
    - cure rate: cases paid or settled by `as_of` over cases opened by then;
    - roll rate x->y: of the cases that ever entered stage x (stage_history), the share whose next
      stage was worse than x (y, or a later one when the case skipped y: a case opened at 40 days
      past due goes early -> late);
    - promise kept rate: `promise_kept` events over `promise_kept` + `promise_broken` events;
    - contacts per cure: contacts actually made (decision 'sent') over cured cases.
    The series gives, per month, cumulative recovery (collected to date over placed to date) and
    monthly roll rates (of the cases in stage x at some time in the month, the share that moved
    to a worse stage in that month). Currencies are never added together: currency is part of
    every group. `policy_name` limits the report to one policy.

    As of now (or any time after the last row of the cases reported), the figures come from the
    rollup the database keeps (a few thousand rows); as of an earlier time, or with `rollup`
    False, from scans of the base tables. Both give the same figures.
    """
    as_of = _utc(as_of) if as_of is not None else datetime.now(UTC)
    if policy_name is not None:
        _matching(policy_name, "policy_name", _POLICY_NAME_RE, "a policy name")

    async def fetch(sql: str) -> list[asyncpg.Record]:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL work_mem = '{_REPORT_WORK_MEM}'")
            return await conn.fetch(sql, as_of, policy_name)

    rolled_up = await _rollup_rows(pool, as_of, policy_name) if rollup else None
    if rolled_up is None:
        rolled_up = await asyncio.gather(
            fetch(_CASES_SQL), fetch(_PAYMENTS_SQL), fetch(_PROMISES_SQL), fetch(_CONTACTS_SQL),
            fetch(_SPANS_SQL),
        )
    case_rows, payment_rows, promise_rows, contact_rows, span_rows = rolled_up
    rows: dict[_SegKey, SegmentFigures] = {}
    for r in case_rows:
        k = _seg_key(r)
        f = rows.get(k)
        if f is None:
            f = rows[k] = SegmentFigures(
                policy_name=k[0], policy_version=k[1], segment=k[2], currency=k[3], cases=0,
                placed=Decimal("0"), collected=Decimal("0"), outstanding=Decimal("0"), cured=0,
                promises_kept=0, promises_broken=0, contacts_sent=0,
                reached=dict.fromkeys(STAGE_RANKS, 0), rolled=dict.fromkeys(ROLL_TRANSITIONS, 0),
                by_state={},
            )
        f.cases += r["cases"]
        f.placed += r["placed"]
        f.outstanding += r["outstanding"]
        state = r["state"] if r["state"] in _STATES else "other"
        f.by_state[state] = f.by_state.get(state, 0) + r["cases"]
        if state in CURED_STATES:
            f.cured += r["cases"]
    for r in payment_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.collected += r["collected"]
    for r in promise_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            if r["kind"] == "promise_kept":
                f.promises_kept += r["n"]
            else:
                f.promises_broken += r["n"]
    for r in contact_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.contacts_sent += r["n"]
    for r in span_rows:
        if (f := rows.get(_seg_key(r))) is not None:
            f.reached[STAGE_RANKS[r["rank"]]] += r["n"]
            if r["rolled"] and r["rank"] < len(ROLL_TRANSITIONS):
                f.rolled[ROLL_TRANSITIONS[r["rank"]]] += r["n"]
    for f in rows.values():
        f.by_state = dict(sorted(f.by_state.items(), key=lambda kv: (
            _STATES.index(kv[0]) if kv[0] in _STATES else len(_STATES))))
    return Report(as_of=as_of, rows=[rows[k] for k in sorted(rows)],
                  series=_series(as_of, case_rows, payment_rows, span_rows))


def _series(as_of: datetime, case_rows: Sequence[Mapping[str, Any]],
            payment_rows: Sequence[Mapping[str, Any]],
            span_rows: Sequence[Mapping[str, Any]]) -> list[SeriesPoint]:
    def key(r: Mapping[str, Any]) -> _SerKey:
        return r["policy_name"], r["policy_version"], r["currency"].strip()

    opened: dict[_SerKey, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    placed: dict[_SerKey, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in case_rows:
        opened[key(r)][r["month"]] += r["cases"]
        placed[key(r)][r["month"]] += r["placed"]
    collected: dict[_SerKey, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in payment_rows:
        collected[key(r)][r["month"]] += r["collected"]
    # month -> rank -> cases in that stage during the month / cases that rolled out of it then
    in_stage: dict[_SerKey, dict[date, dict[int, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int)))
    rolled: dict[_SerKey, dict[date, dict[int, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int)))
    for r in span_rows:
        rank = r["rank"]
        if rank >= len(ROLL_TRANSITIONS):
            continue
        for month in _month_range(r["first_month"], r["last_month"]):
            in_stage[key(r)][month][rank] += r["n"]
        if r["rolled"]:
            rolled[key(r)][r["last_month"]][rank] += r["n"]
    points: list[SeriesPoint] = []
    last = as_of.date()
    for k in sorted(opened):
        cum_placed = cum_collected = Decimal("0")
        for month in _month_range(min(opened[k]), last):
            cum_placed += placed[k].get(month, Decimal("0"))
            cum_collected += collected[k].get(month, Decimal("0"))
            stages = in_stage[k].get(month, {})
            rolls = rolled[k].get(month, {})
            points.append(SeriesPoint(
                month=month, policy_name=k[0], policy_version=k[1], currency=k[2],
                opened=opened[k].get(month, 0), placed=placed[k].get(month, Decimal("0")),
                collected=collected[k].get(month, Decimal("0")), cumulative_placed=cum_placed,
                cumulative_collected=cum_collected,
                in_stage={STAGE_RANKS[i]: stages.get(i, 0) for i in range(len(ROLL_TRANSITIONS))},
                rolled={t: rolls.get(i, 0) for i, t in enumerate(ROLL_TRANSITIONS)},
            ))
    return points


def render_chart(report: Report, path: Path) -> Path:
    """A PNG: roll rate per transition for each policy version (bars), and cumulative recovery
    by month for each policy version (lines)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(12, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    rolls_ax, recovery_ax = fig.subplots(1, 2)
    versions = report.by_policy_version()
    width = 0.8 / max(len(versions), 1)
    for i, v in enumerate(versions):
        values = [float(x) if x is not None else 0.0 for x in v.roll_rates.values()]
        xs = [j + (i - (len(versions) - 1) / 2) * width for j in range(len(ROLL_TRANSITIONS))]
        rolls_ax.bar(xs, values, width=width,
                     label=f"{v.policy_name}@{v.policy_version} {v.currency}")
    rolls_ax.set_xticks(range(len(ROLL_TRANSITIONS)),
                        [t.replace("->", "\n→ ") for t in ROLL_TRANSITIONS], fontsize=8)
    rolls_ax.set_ylim(0, 1)
    rolls_ax.set_ylabel("share of the cases entering the stage that moved on")
    rolls_ax.set_title("Roll rate per transition")
    series: dict[tuple[str, str, str], list[SeriesPoint]] = defaultdict(list)
    for p in report.series:
        series[(p.policy_name, p.policy_version, p.currency)].append(p)
    for (name, version, currency), points in sorted(series.items()):
        pts = [p for p in points if p.recovery_rate is not None]
        recovery_ax.plot([p.month for p in pts], [float(p.recovery_rate or 0) for p in pts],
                         marker="o", markersize=3, label=f"{name}@{version} {currency}")
    recovery_ax.set_ylim(bottom=0)
    recovery_ax.set_ylabel("collected / placed, to date")
    recovery_ax.set_title("Recovery over time")
    recovery_ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for ax in (rolls_ax, recovery_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"Collections portfolio as of {report.as_of:%Y-%m-%d %H:%M} UTC")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
