"""Borrower data kept out of Temporal (issue 18, item 1): a case started through the service keeps
the personal fields in the vault, and only a reference travels.

The client and worker here run WITHOUT the payload codec, so what the history holds is plain
JSON: a name, phone number or e-mail address in it would be readable as it stands. The case runs
its reminders and a payment to its receipts; the borrower gets every message at the right address
(read from the vault at send time), and neither the raw history nor any PostgreSQL table holds a
personal value, except inside the vault's ciphertext.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.messages import PERSONAL_FIELDS, CaseState, CloseInput, LoanInput, PaymentInput
from infra.emulator import ProviderEmulator
from infra.vault_crypto import VaultCipher
from service import cases
from service.case_calls import handle
from service.vault import Vault, placement_borrower, vault_shaped, with_personal
from tests.helpers import eventually, make_loan, result_of, today_of
from tests.test_privacy import payloads, variants
from workflows import addresses
from workflows.collection_workflow import CollectionWorkflow


def borrower(loan_id: str, due_in: int, today: date, **overrides: Any) -> LoanInput:
    """A loan whose borrower's name and e-mail are their own (found nowhere else)."""
    suffix = uuid.uuid4().hex[:6]
    overrides.setdefault("borrower_name", f"Wilhelmina Qiaoxue{suffix}")
    overrides.setdefault("email", f"wilhelmina.{suffix}@borrower-mail.example")
    return make_loan(loan_id, due=today + timedelta(days=due_in), **overrides)


def secrets_of(loan: LoanInput) -> dict[str, str]:
    return {"phone": loan.phone, "phone digits": loan.phone.lstrip("+"), "email": loan.email,
            "name": loan.borrower_name}


async def tables_text(pool: asyncpg.Pool) -> dict[str, str]:
    """Every row of every table in the public schema, as text (bytea as hex)."""
    names = [r["table_name"] for r in await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_type = 'BASE TABLE'")]
    found = {}
    for name in names:
        rows = await pool.fetch(f'SELECT row_to_json(t)::text AS j FROM "{name}" t')
        found[name] = "\n".join(r["j"] for r in rows)
    return found


def test_the_shape_keeps_the_facts_the_case_decides_on() -> None:
    loan = make_loan("VSHAPE-1", due=date(2026, 12, 1),
                     wecom_external_userid="wmQ1x")
    shaped = vault_shaped(loan, "bv-test")
    assert all(getattr(shaped, f) == "" for f in PERSONAL_FIELDS)
    assert shaped.jurisdiction == "CN" and shaped.borrower_ref == "bv-test"
    assert shaped.borrower_id == addresses.borrower_key(loan)
    for name in ("sms", "email", "call", "wecom", "voice", "visit"):
        assert addresses.contact_key(shaped, name) == addresses.contact_key(loan, name)
    no_wecom = vault_shaped(make_loan("VSHAPE-2", due=loan.due_date), "bv-2")
    assert "wecom" not in no_wecom.contact_keys
    assert not addresses.has_address(no_wecom, "wecom") and addresses.has_address(no_wecom, "sms")
    # The agent's reveal and the agency's view read the vault; erased reads as such.
    fields = {f: str(getattr(loan, f)) for f in PERSONAL_FIELDS}
    assert with_personal(shaped, fields).phone == loan.phone
    assert with_personal(shaped, None).phone == "erased"
    assert placement_borrower({"locale": "en"}, None)["name"] == "erased"


def test_a_ciphertext_moved_to_another_entry_does_not_decrypt(
        vault_keys: dict[str, bytes]) -> None:
    cipher = VaultCipher(vault_keys)
    sealed, kid = cipher.encrypt("bv-a", {"phone": "+8613800138000"})
    assert cipher.decrypt("bv-a", sealed, kid) == {"phone": "+8613800138000"}
    try:
        cipher.decrypt("bv-b", sealed, kid)
    except LookupError:
        pass
    else:
        raise AssertionError("decrypted under another entry's reference")


async def test_no_personal_value_outside_the_vault(
    ts_env: WorkflowEnvironment, vault_worker: Worker, pool: asyncpg.Pool,
    emulator: ProviderEmulator, vault_keys: dict[str, bytes], loan_id: str,
) -> None:
    client = ts_env.client  # no codec: the history is read as plain JSON
    loan = borrower(loan_id, 5, today_of(await ts_env.get_current_time()))
    vault = Vault(pool, vault_keys)
    assert await cases.start_loan(client, loan, task_queue=vault_worker.task_queue,
                                  vault=vault) == "started"
    # A second start changes nothing, and keeps the one entry.
    assert await cases.start_loan(client, loan, task_queue=vault_worker.task_queue,
                                  vault=vault) == "already running"
    case = handle(client, loan.loan_id)
    await ts_env.sleep(timedelta(days=7))  # D-3 reminder, D+1 SMS
    await case.signal(CollectionWorkflow.pay, PaymentInput("pay-1", Decimal("1200.00"), "CNY"))
    # A receipt owed at night waits for the window; a handle got by id does not skip time on the
    # test server while it waits for the result (only the handles `start_workflow` returns do),
    # so the clock is moved past the night here.
    await ts_env.sleep(timedelta(days=1))
    result = await result_of(case)
    assert result["state"] == CaseState.PAID

    # The messages reached the borrower at the addresses the vault holds, with the name.
    assert len(emulator.messages(to=loan.phone)) >= 2
    mails = emulator.messages(to=loan.email)
    assert len(mails) >= 2
    assert any(loan.borrower_name in (m["body"] or "") for m in mails)

    history = await case.fetch_history()
    text = history.to_json()
    for what, secret in secrets_of(loan).items():
        assert secret not in text, f"{what} in the history"
    for event in history.events:
        for path, payload in payloads(event):
            for what, secret in secrets_of(loan).items():
                assert not any(form in payload.data for form in variants(secret)), (
                    f"{what} in {event.event_type}{path}")

    rows = await tables_text(pool)
    assert {"borrower_vault", "contacts", "cases", "outbox", "events"} <= set(rows)
    for table, dump in rows.items():
        for what, secret in secrets_of(loan).items():
            assert secret not in dump and secret.encode().hex() not in dump, (
                f"{what} in table {table}")
    entries = await pool.fetch("SELECT * FROM borrower_vault WHERE loan_id = $1", loan.loan_id)
    assert len(entries) == 1 and entries[0]["ciphertext"] is not None
    assert (await vault.fields_of_loan(loan.loan_id) or {})["phone"] == loan.phone
    sent = await pool.fetch("SELECT contact_key FROM contacts WHERE loan_id = $1 "
                            "AND decision = 'sent' AND channel = 'sms'", loan.loan_id)
    assert {r["contact_key"] for r in sent} == {addresses.contact_key(loan, "sms")}


def test_v7_recordings_start_vault_shaped() -> None:
    """tests/record_histories.py's -v7 recordings (replayed by tests/test_replay.py) start as the
    service starts a case: a reference, the facts computed at start, no personal field."""
    import base64
    import json
    from pathlib import Path

    found = sorted((Path(__file__).parent / "histories").glob("*-v7.json"))
    assert {p.stem for p in found} >= {"paid_in_full-v7", "sms_opted_out-v7"}
    for path in found:
        events = json.loads(path.read_text())["events"]
        payload = events[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
        loan = json.loads(base64.b64decode(payload["data"]))["loan"]
        assert loan["borrower_ref"].startswith("bv-") and loan["jurisdiction"] == "CN"
        assert all(loan[f] == "" for f in PERSONAL_FIELDS), path.name
        assert "+86138" not in path.read_text() and "@example.com" not in path.read_text()


async def vault_case(env: WorkflowEnvironment, worker: Worker, vault: Vault, loan_id: str,
                     **overrides: Any) -> LoanInput:
    """A loan due in 20 days opened through the service, its borrower in the vault; returns the
    loan as the loan system gave it (the personal fields included)."""
    loan = borrower(loan_id, 20, today_of(await env.get_current_time()), **overrides)
    assert await cases.start_loan(env.client, loan, task_queue=worker.task_queue,
                                  vault=vault) == "started"
    return loan


async def end_case(env: WorkflowEnvironment, pool: asyncpg.Pool, loan_id: str) -> None:
    """Close the case (an operator's `close`) and wait for PostgreSQL to show it ended."""
    case = handle(env.client, loan_id)
    # temporalio types the result of a named async update as its coroutine.
    await case.execute_update(  # type: ignore[unused-coroutine]
        CollectionWorkflow.close, CloseInput(actor="test", reason="sold"))
    await result_of(case)
    await eventually(lambda: pool.fetchval("SELECT closed_at FROM cases WHERE loan_id = $1",
                                           loan_id), lambda at: at is not None)
