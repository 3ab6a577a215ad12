"""A borrower's deletion request (issue 18, item 2): `erase` is refused while any of the
borrower's cases is open, then carried out at once across both their loans, and audited; status,
history and report still answer for those cases and show the borrower as erased.

Two real loans of one borrower (`borrower_id`), opened through the service with the borrower in
the vault, on the time-skipping server; the CLI runs in a thread against that server and the
session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

import starter
from cli.exit_codes import EXIT_CODES
from service import cases, erasure, retention
from service import history as case_history
from service.errors import ErrorKind, NotFound, Refused
from service.report import portfolio_report
from service.vault import Vault
from tests.test_vault import end_case, secrets_of, tables_text, vault_case


def cli_env(env: WorkflowEnvironment, pg_dsn: str, tmp_path: Path) -> dict[str, str | None]:
    return {"TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": env.client.namespace, "DATABASE_URL": pg_dsn,
            "STATE_DIR": str(tmp_path), "COLLECTIONS_ENCRYPTION_KEYS": None, "COLUMNS": "200"}


async def collect(env: dict[str, str | None], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, starter.app, list(args), env=env)


async def test_erase_refused_while_open_then_done_across_both_loans(
    ts_env: WorkflowEnvironment, vault_worker: Worker, pool: asyncpg.Pool, pg_dsn: str,
    vault_keys: dict[str, bytes], tmp_path: Path,
) -> None:
    vault = Vault(pool, vault_keys)
    borrower_id = f"B-{uuid.uuid4().hex[:8]}"
    first, second = f"E{uuid.uuid4().hex[:8]}", f"E{uuid.uuid4().hex[:8]}"
    loan = await vault_case(ts_env, vault_worker, vault, first, borrower_id=borrower_id)
    await vault_case(ts_env, vault_worker, vault, second, borrower_id=borrower_id,
                     borrower_name=loan.borrower_name, phone=loan.phone, email=loan.email)
    await end_case(ts_env, pool, first)
    env = cli_env(ts_env, pg_dsn, tmp_path)

    # Refused with the reason while the second loan's case is open: nothing erased.
    with pytest.raises(Refused, match=f"open cases \\({second}\\)"):
        await erasure.erase_borrower(pool, ts_env.client, borrower_id, actor="ops",
                                     reason="deletion request 2026-881")
    refused = await collect(env, "erase", "--borrower", borrower_id, "--reason", "request 881",
                            "--actor", "ops.li")
    assert refused.exit_code == EXIT_CODES[ErrorKind.REFUSED], refused.output
    assert second in refused.output and "open cases" in refused.output
    assert await vault.fields_of_loan(first) is not None
    assert not [e for e in await retention.audit(pool, loan_id=first) if e.kind == "erasure"]

    # A legal hold refuses it too, once the cases have ended; released, the erasure goes ahead.
    await end_case(ts_env, pool, second)
    await retention.set_legal_hold(pool, second, actor="ops", reason="regulator inquiry")
    with pytest.raises(Refused, match="legal hold"):
        await erasure.erase_borrower(pool, ts_env.client, borrower_id, actor="ops",
                                     reason="deletion request 2026-881")
    await retention.release_legal_hold(pool, second, actor="ops")
    done = await collect(env, "erase", "--borrower", borrower_id, "--reason",
                         "deletion request 2026-881", "--actor", "ops.li")
    assert done.exit_code == 0, done.output
    assert f"erased across 2 loan(s): {', '.join(sorted([first, second]))}" in done.output
    for loan_id in (first, second):
        assert await vault.fields_of_loan(loan_id) is None

    # The audit: who, why, which loans, what; not the data.
    [entry] = [e for e in await retention.audit(pool, loan_id=second) if e.kind == "erasure"]
    assert (entry.actor, entry.reason, entry.borrower_id) == (
        "ops.li", "deletion request 2026-881", borrower_id)
    assert sorted(entry.loan_ids) == sorted([first, second]) and "borrower_vault" in entry.what
    rows = await tables_text(pool)
    for table, dump in rows.items():
        for what, secret in secrets_of(loan).items():
            assert secret not in dump, f"{what} in table {table}"

    # status, history and report still work for the erased cases, and say so.
    status = await cases.status(ts_env.client, first)
    assert status.state.value == "closed"
    shown = await collect(env, "status", first)
    assert shown.exit_code == 0, shown.output
    assert "borrower: erased" in shown.output and loan.phone not in shown.output
    entries = await case_history.history(ts_env.client, pool, second)
    erased = [e for e in entries if e.kind == "borrower_erased"]
    assert len(erased) == 1 and erased[0].actor == "ops.li"
    assert "deletion request" in erased[0].summary
    # As of the test server's clock (ahead of the wall clock once a test has skipped time).
    report = await portfolio_report(pool, as_of=await ts_env.get_current_time(), rollup=False)
    assert sum(r.cases for r in report.rows) >= 2
    assert (await collect(env, "report")).exit_code == 0


async def test_erase_of_an_unknown_borrower_is_not_found(
    ts_env: WorkflowEnvironment, pool: asyncpg.Pool,
) -> None:
    with pytest.raises(NotFound):
        await erasure.erase_borrower(pool, ts_env.client, "B-nobody", actor="ops", reason="r")
