"""Retention (issue 18, item 2): a case's personal data is erased by the daily purge once its
policy's retention has passed since the case ended, unless a legal hold keeps it.

The cases are real: opened through the service (their borrowers in the vault) and ended on the
time-skipping server. Their end is then moved back past the retention (`cases.closed_at`, what the
purge reads), and the purge runs as the Temporal Schedule runs it, on the dev server: the
schedule is created as a worker creates it at start-up, and triggered.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import ScheduleActionExecutionStartWorkflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database.purge import PurgeActivities, retention_ends
from contracts.retention import PURGE_HOUR_UTC, SCHEDULE_ACTOR, PurgeRequest, PurgeResult
from policies.loader import load_rule_packs, parse_policy
from policies.problems import PolicyError
from service import retention
from service.report import portfolio_report
from service.vault import Vault
from tests.helpers import eventually
from tests.test_vault import end_case, vault_case


def test_retention_is_a_policy_setting_from_the_case_end() -> None:
    ended = datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert retention_ends(ended, 5) == datetime(2029, 2, 28, 12, tzinfo=UTC)
    text = (Path(__file__).resolve().parent.parent / "policies" / "demo.toml").read_text()
    assert "retention_years = 5" in text
    with pytest.raises(PolicyError, match="retention_years"):
        parse_policy(text.replace("retention_years = 5", "retention_years = 0"), "demo.toml",
                     rule_packs=load_rule_packs(), templates=None)


async def _back_date(pool: asyncpg.Pool, loan_id: str, years: int) -> None:
    """Say the case ended `years` ago. From the real clock, not the recorded end: the session's
    time-skipping server has skipped ahead by every lifecycle run before this test."""
    await pool.execute("UPDATE cases SET closed_at = now() - make_interval(years => $2) "
                       "WHERE loan_id = $1", loan_id, years)


async def _scheduled_run(env: WorkflowEnvironment, schedule_id: str) -> PurgeResult:
    """Trigger the schedule once and wait for the purge it started."""
    schedule = env.client.get_schedule_handle(schedule_id)
    await schedule.trigger()

    async def started() -> list[str]:
        actions = (await schedule.describe()).info.recent_actions
        return [a.action.workflow_id for a in actions
                if isinstance(a.action, ScheduleActionExecutionStartWorkflow)]

    run_ids = await eventually(started, bool, timeout=30)
    async with asyncio.timeout(60):
        return await env.client.get_workflow_handle(
            run_ids[-1], result_type=PurgeResult).result()


async def test_the_scheduled_purge_erases_past_retention_and_keeps_holds(
    ts_env: WorkflowEnvironment, vault_worker: Worker, dev_env: WorkflowEnvironment,
    dev_worker: Worker, pool: asyncpg.Pool, vault_keys: dict[str, bytes],
) -> None:
    vault = Vault(pool, vault_keys)
    tag = uuid.uuid4().hex[:6]
    expired, held, litigated, recent = (f"R{tag}{n}" for n in ("exp", "hold", "lit", "new"))
    for loan_id in (expired, held, litigated, recent):
        await vault_case(ts_env, vault_worker, vault, loan_id)
        await end_case(ts_env, pool, loan_id)
    for loan_id in (expired, held, litigated):
        await _back_date(pool, loan_id, 6)  # the default policy keeps 5 years
    await _back_date(pool, recent, 4)
    await retention.set_legal_hold(pool, held, actor="ops", reason="litigation 2026-123")
    # A litigation filing holds its case without anyone asking (as record_legal_action writes it).
    await pool.execute("INSERT INTO legal_actions (idempotency_key, loan_id, action, created_at) "
                       "VALUES ($1, $2, 'filing', now())", f"{litigated}/filing", litigated)

    schedule_id = f"retention-purge-{tag}"
    assert await retention.ensure_purge_schedule(dev_env.client, dev_worker.task_queue,
                                                 schedule_id=schedule_id)
    assert not await retention.ensure_purge_schedule(dev_env.client, dev_worker.task_queue,
                                                     schedule_id=schedule_id)  # idempotent
    try:
        spec = (await dev_env.client.get_schedule_handle(schedule_id).describe()).schedule.spec
        assert [r.start for r in spec.calendars[0].hour] == [PURGE_HOUR_UTC]  # daily
        result = await _scheduled_run(dev_env, schedule_id)
    finally:
        await dev_env.client.get_schedule_handle(schedule_id).delete()

    assert expired in result.erased
    assert {held, litigated} <= set(result.held) and recent not in result.erased
    assert await vault.fields_of_loan(expired) is None
    for kept in (held, litigated, recent):
        assert (await vault.fields_of_loan(kept) or {}).get("phone", "").startswith("+86")
    assert await pool.fetchval("SELECT reason FROM legal_holds WHERE loan_id = $1",
                               litigated) == "litigation"

    # The audit: what, when, by which schedule, the cases; no personal value.
    [entry] = [e for e in await retention.audit(pool, loan_id=expired) if e.kind == "purge"]
    assert entry.actor == SCHEDULE_ACTOR and "borrower_vault" in entry.what
    assert expired in entry.loan_ids and {held, litigated} <= set(entry.held_loan_ids)
    # The figures stay: the case row, its contacts, the report.
    row = await pool.fetchrow("SELECT state, amount_placed FROM cases WHERE loan_id = $1", expired)
    assert row["state"] == "closed" and row["amount_placed"] > 0
    # As of the test server's clock (ahead of the wall clock once a test has skipped time).
    report = await portfolio_report(pool, as_of=await ts_env.get_current_time(), rollup=False)
    assert sum(r.cases for r in report.rows) >= 4

    # Released, the hold no longer keeps the case: the next run erases it.
    await retention.release_legal_hold(pool, held, actor="ops")
    again = await PurgeActivities(pool).purge_expired(PurgeRequest(
        run_key=f"test/{tag}", as_of=datetime.now(UTC), actor="ops"))
    assert held in again.erased and litigated in again.held
    assert await vault.fields_of_loan(held) is None


async def test_a_retried_purge_writes_one_audit_row(pool: asyncpg.Pool) -> None:
    request = PurgeRequest(run_key=f"retry/{uuid.uuid4().hex}",
                           as_of=datetime.now(UTC) + timedelta(days=1), actor="ops")
    first = await PurgeActivities(pool).purge_expired(request)
    second = await PurgeActivities(pool).purge_expired(request)
    assert first == second
    assert await pool.fetchval("SELECT count(*) FROM erasure_audit WHERE run_key = $1",
                               request.run_key) == 1
