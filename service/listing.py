"""Cases matching filters: from Temporal visibility (the search attributes the workflows upsert)
or from PostgreSQL's `cases` table, with the same filters meaning the same thing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

import asyncpg
from temporalio.client import Client, WorkflowHistoryEventFilterType
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from contracts.messages import CaseState, Stage
from contracts.names import (
    ASSIGNED_AGENT,
    CASE_STATE,
    CURRENCY,
    DAYS_PAST_DUE,
    EXPERIMENT_ARM,
    OUTSTANDING,
    POLICY_VERSION,
    STAGE,
    loan_id_from,
    workflow_id_for,
)
from service.case_filters import case_filters, list_limit, sql_where, visibility_query
from service.errors import Refused, Unreachable


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
    # A case whose start failed (state "failed": its input broke the loan-file rules; it never
    # opened and has no `cases` row): the field and problem from the workflow's failure, e.g.
    # "loan.timezone: is not an IANA time zone". Never a borrower's value.
    failure: str | None = None
    arm: str | None = None  # "experiment:arm" for a case assigned in an experiment


async def list_cases(
    client: Client, *, limit: int = 100, stage: str | Stage | None = None,
    state: str | CaseState | None = None, min_outstanding: int | Decimal | None = None,
    max_outstanding: int | Decimal | None = None, min_dpd: int | None = None,
    max_dpd: int | None = None, agent: str | None = None, policy_version: str | None = None,
    currency: str | None = None, arm: str | None = None,
) -> list[CaseRow]:
    """Cases from Temporal visibility (eventually consistent: a second or so behind the cases).

    Most recently started first. Fields are None until the case has upserted its attributes.
    A case whose start failed (`state="failed"`) carries the failure's field and problem.
    """
    query = visibility_query(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency, arm=arm,
    )
    limit = list_limit(limit)
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
                policy_version=sa.get(POLICY_VERSION), arm=sa.get(EXPERIMENT_ARM),
            ))
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise Unreachable("cannot reach Temporal: is the worker running? (make run)") from None
        raise Refused(
            f"Temporal refused the list query ({err.status.name}): {err.message}") from None
    failed = [i for i, r in enumerate(rows) if r.state == CaseState.FAILED.value]
    if failed:
        limit_calls = asyncio.Semaphore(_FAILURE_READS)

        async def with_failure(i: int) -> None:
            async with limit_calls:
                rows[i] = replace(rows[i], failure=await start_failure(client, rows[i].loan_id))

        await asyncio.gather(*(with_failure(i) for i in failed))
    return rows


_FAILURE_READS: Final = 10  # close events read at once for the failed cases of one list
_FAILURE_PREFIX: Final = "invalid case input: "


async def start_failure(client: Client, loan_id: str) -> str | None:
    """Why a case's start failed: the workflow's failure message (the field and the problem,
    never the value), read from its close event alone; None if it did not fail or cannot say."""
    case = client.get_workflow_handle(workflow_id_for(loan_id))
    try:
        async for event in case.fetch_history_events(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT):
            if not event.HasField("workflow_execution_failed_event_attributes"):
                return None
            failure = event.workflow_execution_failed_event_attributes.failure
            try:
                error = await client.data_converter.decode_failure(failure)
                message = error.message if isinstance(error, FailureError) else str(error)
            except Exception:  # another process's keys: the message as stored, if plain
                message = failure.message
            return message.removeprefix(_FAILURE_PREFIX).splitlines()[0] if message else None
    except RPCError:
        return None
    return None


async def list_cases_db(
    pool: asyncpg.Pool, *, limit: int = 100, stage: str | Stage | None = None,
    state: str | CaseState | None = None, min_outstanding: int | Decimal | None = None,
    max_outstanding: int | Decimal | None = None, min_dpd: int | None = None,
    max_dpd: int | None = None, agent: str | None = None, policy_version: str | None = None,
    currency: str | None = None, arm: str | None = None,
) -> list[CaseRow]:
    """Cases from the `cases` table (as of the last record the workflows wrote), the same filters
    with the same meaning as `list_cases`; largest balance first. One indexed query."""
    f = case_filters(
        stage=stage, state=state, min_outstanding=min_outstanding, max_outstanding=max_outstanding,
        min_dpd=min_dpd, max_dpd=max_dpd, agent=agent, policy_version=policy_version,
        currency=currency, arm=arm,
    )
    where, args = sql_where(f)
    args.append(list_limit(limit))
    rows = await pool.fetch(
        f"""
        SELECT loan_id, state, stage, days_past_due, outstanding, currency, assigned_agent,
               policy_name || '@' || policy_version AS policy_version,
               experiment || ':' || arm AS arm
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
                policy_version=r["policy_version"], arm=r["arm"])
        for r in rows
    ]
