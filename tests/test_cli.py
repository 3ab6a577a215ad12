"""The command line and the service operations behind it.

Input checks run through typer's CliRunner with no server at all (TEMPORAL_ADDRESS points at a
closed port, so a command that wrongly connects fails loudly). Everything that talks to Temporal
runs against the session's dev server and worker, through `service/` and, for a few
commands, through the CLI itself in a thread (the worker needs the event loop meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

import starter
from cli.exit_codes import EXIT_CODES
from contracts.messages import CeaseInput, PaymentInput, PromiseInput
from contracts.names import workflow_id_for
from service import cases as case_service
from service import policy_explain, tasks, updates
from service.errors import (
    BadInput,
    CaseClosed,
    Conflict,
    ErrorKind,
    NotFound,
    Refused,
    ServiceError,
    Unreachable,
)
from tests.helpers import eventually, make_loan, pinned

ROOT = Path(__file__).resolve().parent.parent
BROKEN_POLICIES = ROOT / "tests" / "data" / "policies"
QUEUE = "dev-collections"
# A closed port: a command that should not connect, or cannot, fails at once.
NO_SERVER = {"TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": None,
             "COLLECTIONS_ENCRYPTION_KEYS": None}
WIDE = {"COLUMNS": "200"}  # rich tables wrap cells at the terminal's width
HEADER = "loan_id,borrower_name,phone,email,locale,timezone,currency,amount_overdue,due_date"
GOOD_ROW = "C1,Li Lei,+8613800138000,li@example.com,en,Asia/Shanghai,CNY,1200.00,2026-06-01"
PHONE = "+861380013800099"  # one digit too many for China


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(starter.app, list(args), env={**WIDE, **(env or NO_SERVER)})


def loan_flags(**overrides: str) -> list[str]:
    flags = {"--loan-id": "C1", "--name": "Li Lei", "--phone": "+8613800138000",
             "--email": "li@example.com", "--locale": "en", "--timezone": "Asia/Shanghai",
             "--currency": "CNY", "--amount": "1200.00", "--due-date": "2026-06-01"}
    flags.update({f"--{k.replace('_', '-')}": v for k, v in overrides.items()})
    return [part for pair in flags.items() for part in pair]


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "loans.csv"
    path.write_text("\n".join([
        HEADER,
        GOOD_ROW,
        f"C2,Wang Fang,{PHONE},wf@example.com,en,Asia/Shanghai,CNY,1e5,2026-06-01",
        "C3,Zhao Min,+8613900139000,zm@example.com,en,Asia/Shanghai,ABC,10.00,2026-02-30",
    ]) + "\n")
    return path


# --------------------------------------------------------------------------- no server needed


def test_bad_file_starts_nothing_and_names_every_problem(bad_file: Path) -> None:
    result = cli("start", "--file", str(bad_file))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert "line 3: phone: not a valid E.164 number (value masked: +86***********99)" in lines
    assert any(line.startswith("line 3: amount_overdue: is not a plain") for line in lines)
    assert "line 4: currency: 'ABC' is not an ISO 4217 currency code" in lines
    assert any(line.startswith("line 4: due_date: '2026-02-30' is not a real") for line in lines)
    assert "nothing started" in lines[-1]
    assert PHONE not in result.output and "Traceback" not in result.output


def test_skip_invalid_checks_first_then_needs_the_server(bad_file: Path) -> None:
    result = cli("start", "--file", str(bad_file), "--skip-invalid")
    assert result.exit_code == 6  # the good row went on to connect, and there is no server
    assert "line 3: phone" in result.stderr
    assert "cannot reach Temporal at 127.0.0.1:1: is the worker running?" in result.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = cli("start", "--file", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"{tmp_path / 'nope.csv'}: no such file"


def test_flags_are_checked_with_flag_names_and_masked_values() -> None:
    result = cli("start", *loan_flags(phone=PHONE, amount="1e5", currency="ABC",
                                      due_date="2026-13-01"))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "--phone: not a valid E.164 number (value masked: +86***********99)",
        "--currency: 'ABC' is not an ISO 4217 currency code",
        "--amount: is not a plain decimal amount (digits with an optional point, e.g. 1250.00)",
        "--due-date: '2026-13-01' is not a real date (expected YYYY-MM-DD)",
    ]
    assert PHONE not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["pay", "C1", "--amount", "1e5", "--currency", "CNY", "--payment-id", "p1"],
     "amount: is not a plain decimal amount"),
    (["pay", "C1", "--amount", "10.00", "--currency", "ABC", "--payment-id", "p1"],
     "currency: 'ABC' is not an ISO 4217 currency code"),
    (["pay", "C1", "--amount", "10.50", "--currency", "JPY", "--payment-id", "p1"],
     "amount: JPY has no minor unit"),
    (["pay", "C1", "--amount", "10", "--currency", "CNY", "--payment-id", "p1",
      "--paid-at", "2026-05-01T10:00"],
     "paid_at: '2026-05-01T10:00' has no UTC offset"),
    (["promise", "C1", "--agent", "a1", "--amount", "10", "--currency", "CNY",
      "--date", "01/06/2026"],
     "date: is not a date in YYYY-MM-DD form"),
    (["plan", "C1", "--agent", "a1", "--currency", "CNY", "--installment", "100"],
     "installment 1: '100' is not AMOUNT@YYYY-MM-DD"),
    (["close", "C1", "--actor", "a1", "--reason", "bored"],
     "reason: is not one of bankruptcy, deceased, sold, fraud, other"),
    (["status", "bad id!"], "loan: must be 1-64 characters"),
    (["tasks", "--kind", "email"], "kind: is not one of call, visit"),
])
def test_bad_values_exit_2_before_connecting(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_unreachable_server_is_one_red_line() -> None:
    result = cli("status", "C1")
    assert result.exit_code == 6
    assert result.stderr == (
        "cannot reach Temporal at 127.0.0.1:1: is the worker running? (make run)\n")


def test_policy_validate_shipped_policies() -> None:
    files = sorted(str(p) for p in (ROOT / "policies").glob("*.toml"))
    result = cli("policy", "validate", *files)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"OK {f}" for f in files]


def test_policy_validate_broken_files_names_file_and_step() -> None:
    good = ROOT / "policies" / "demo.toml"
    result = cli("policy", "validate", str(BROKEN_POLICIES / "unknown_template.toml"),
                 str(BROKEN_POLICIES / "out_of_order.toml"), str(good))
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert f"OK {good}" in lines
    # Each file named as it was given, in full.
    assert f"{BROKEN_POLICIES / 'unknown_template.toml'}: ladder 'standard' step 2 'firm': " \
           "unknown template 'firm_reminders' (did you mean 'firm_reminder'?)" in lines
    assert any(line.startswith(f"{BROKEN_POLICIES / 'out_of_order.toml'}: ladder 'standard' "
                               "step 3") for line in lines)


def test_policy_list() -> None:
    result = cli("policy", "list")
    assert result.exit_code == 0
    assert "default" in result.stdout and "small_balance -> small_balance" in result.stdout


def test_policy_explain_from_flags() -> None:
    result = cli("policy", "explain", *loan_flags(), "--at", "2026-05-20T00:00:00Z",
                 "--count", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "policy default" in out and "segment standard, ladder standard, rule pack cn" in out
    assert "pre-due-reminder" in out and "2026-05-29 10:00 CST" in out  # D-3 at 10:00 local
    assert "early-sms" in out and "2026-06-02 10:00 CST" in out
    assert "firm-reminder" not in out  # --count 3


def test_policy_explain_from_a_file_row(tmp_path: Path) -> None:
    path = tmp_path / "loans.csv"
    path.write_text(f"{HEADER}\n{GOOD_ROW}\nC9,Wang Fang,+8613900139000,wf@example.com,en,"
                    "America/New_York,USD,300.00,2026-06-01\n")
    result = cli("policy", "explain", "--file", str(path), "--loan-id", "C9",
                 "--at", "2026-05-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "segment small_balance, ladder small_balance, rule pack cn" in result.stdout
    assert "EDT" in result.stdout  # local times in the borrower's zone
    assert cli("policy", "explain", "--file", str(path)).exit_code == 2  # two loans: which one?


def test_explain_plans_only_upcoming_steps_in_local_time() -> None:
    loan = make_loan("X1", date(2026, 6, 1), amount_overdue=Decimal("800.00"))
    now = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai on D+1: early-sms just went
    x = policy_explain.explain(loan, now=now, count=2)
    assert (x.policy_name, x.segment, x.ladder, x.rule_pack) == (
        "default", "standard", "standard", "cn")
    assert x.past_steps == 2
    assert [c.step_id for c in x.contacts] == ["early-reminder", "early-call"]
    assert all(c.at >= now and c.local.utcoffset() == timedelta(hours=8) for c in x.contacts)
    with pytest.raises(BadInput, match="policy 'nope' is not known"):
        policy_explain.explain(make_loan("X2", date(2026, 6, 1), policy="nope"), now=now)


def test_explain_shows_the_rule_that_defers_a_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step the ladder puts at 23:00 waits for the window to open at 08:00 the next day."""
    loan = make_loan("X3", date(2026, 6, 1))
    late = pinned(loan)
    late = late.model_copy(update={"steps": [late.steps[0].model_copy(update={"hour": 23})]})
    monkeypatch.setattr(policy_explain, "resolve", lambda _loan: late)
    (contact,) = policy_explain.explain(loan, now=datetime(2026, 5, 1, tzinfo=UTC)).contacts
    assert contact.deferred_by == "cn.cba.quiet_hours_22_08"
    assert contact.planned == datetime(2026, 5, 29, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    assert contact.local.isoformat() == "2026-05-30T08:00:00+08:00"
    result = cli("policy", "explain", *loan_flags(), "--at", "2026-05-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert "deferred by cn.cba.quiet_hours_22_08 from 2026-05-29 23:00" in result.stdout
    assert "2026-05-30 08:00 CST" in result.stdout


def test_help_reads_like_documentation() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "policy" in result.stdout
    assert "Exit codes" in result.stdout


def test_subprocess_bad_file_and_help(bad_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), "start", "--file", str(bad_file)],
        capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "line 3: phone: not a valid E.164 number (value masked: +86***********99)" in run.stderr
    assert "line 4: currency: 'ABC' is not an ISO 4217 currency code" in run.stderr
    assert "Traceback" not in run.stderr and PHONE not in run.stderr + run.stdout
    shown = subprocess.run([sys.executable, str(ROOT / "starter.py"), "--help"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and "start" in shown.stdout and "promise" in shown.stdout


# --------------------------------------------------------------------------- one exit code per kind

ERRORS: dict[ErrorKind, ServiceError] = {
    ErrorKind.NOT_FOUND: NotFound("no collection case for loan C1"),
    ErrorKind.CLOSED: CaseClosed("case for loan C1 is closed (paid)"),
    ErrorKind.REFUSED: Refused("settlement 1.00 is below the policy's floor of 550.00"),
    ErrorKind.BAD_INPUT: BadInput("amount", "'x' is not a decimal amount"),
    ErrorKind.CONFLICT: Conflict("case for loan C1 did not accept the request; try again"),
    ErrorKind.UNREACHABLE: Unreachable("cannot reach Temporal: is the worker running?"),
}
# A verb, the service function behind it, and its arguments.
VERBS = [
    ("status", case_service, "status", ["status", "C1"]),
    ("timeline", case_service, "timeline", ["timeline", "C1"]),
    ("pay", updates, "pay",
     ["pay", "C1", "--amount", "10.00", "--currency", "CNY", "--payment-id", "p1"]),
    ("cease", updates, "cease", ["cease", "C1", "--actor", "a1"]),
    ("close", updates, "close", ["close", "C1", "--actor", "a1", "--reason", "sold"]),
    ("start", case_service, "start_loan", ["start", *loan_flags()]),
]


def test_every_kind_has_its_own_exit_code() -> None:
    assert set(EXIT_CODES) == set(ErrorKind)
    assert len(set(EXIT_CODES.values())) == len(ErrorKind) and 0 not in EXIT_CODES.values()
    assert "Exit codes: 0 done, 1 refused" in " ".join(cli("--help").stdout.split())


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_each_kind_gives_its_exit_code_from_every_verb(
    kind: ErrorKind, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service fails the same way under each verb; every verb exits with the kind's code."""
    async def connected(_settings: object) -> object:
        return object()  # never used: the service call below fails first

    async def failing(*_args: object, **_kwargs: object) -> None:
        raise ERRORS[kind]

    monkeypatch.setattr("service.connection.connect", connected)
    for _verb, module, name, _args in VERBS:
        monkeypatch.setattr(module, name, failing)
    for verb, _module, _name, args in VERBS:
        result = cli(*args)
        assert result.exit_code == EXIT_CODES[kind], (verb, result.output)
        assert result.stderr == f"{ERRORS[kind]}\n", (verb, result.stderr)


@pytest.mark.parametrize(("kind", "runs"), [
    (ErrorKind.BAD_INPUT, [["status", "bad id!"], ["pay", "C1", "--amount", "-1", "--currency",
                                                   "CNY", "--payment-id", "p1"],
                           ["policy", "validate", str(BROKEN_POLICIES / "out_of_order.toml")]]),
    (ErrorKind.UNREACHABLE, [["status", "C1"], ["cease", "C1", "--actor", "a1"],
                             ["start", *loan_flags()]]),
])
def test_real_errors_give_the_same_codes(kind: ErrorKind, runs: list[list[str]]) -> None:
    for args in runs:
        assert cli(*args).exit_code == EXIT_CODES[kind], args


# --------------------------------------------------------------------------- against the dev server


@pytest.fixture
async def cases(dev_env: WorkflowEnvironment, dev_worker: Worker) -> AsyncIterator[list[str]]:
    """Loan ids whose cases a test opened; each is terminated afterwards (a quiet server)."""
    started: list[str] = []
    yield started
    for loan_id in started:
        with contextlib.suppress(RPCError):  # already closed
            await dev_env.client.get_workflow_handle(workflow_id_for(loan_id)).terminate("over")


def due_soon() -> date:
    return datetime.now(UTC).date() + timedelta(days=10)  # the first contact is a week away


async def runs_of(client: Client, loan_id: str) -> int:
    query = f"WorkflowId = '{workflow_id_for(loan_id)}'"
    return len([w async for w in client.list_workflows(query)])


async def test_start_twice_is_one_run(dev_env: WorkflowEnvironment, cases: list[str],
                                      loan_id: str) -> None:
    client, loan = dev_env.client, make_loan(loan_id, due_soon())
    cases.append(loan_id)
    assert await case_service.start_loan(client, loan, task_queue=QUEUE) == "started"
    assert await case_service.start_loan(client, loan, task_queue=QUEUE) == "already running"
    assert await eventually(lambda: runs_of(client, loan_id), lambda n: n >= 1) == 1
    await client.get_workflow_handle(workflow_id_for(loan_id)).terminate("test")
    assert await case_service.start_loan(client, loan, task_queue=QUEUE) == "already closed"
    with pytest.raises(CaseClosed, match=rf"case for loan {loan_id} is closed \(terminated\)"):
        await updates.cease(client, loan_id, CeaseInput("a1"))
    assert await eventually(lambda: runs_of(client, loan_id), lambda n: n >= 1) == 1


async def test_start_many_counts_and_reports_progress(
    dev_env: WorkflowEnvironment, cases: list[str], loan_id: str,
) -> None:
    client = dev_env.client
    loans = [make_loan(f"{loan_id}-{i}", due_soon()) for i in range(6)]
    cases.extend(loan.loan_id for loan in loans)
    assert await case_service.start_loan(client, loans[0], task_queue=QUEUE) == "started"
    seen: list[case_service.StartResult] = []
    counts = await case_service.start_many(client, iter(loans), task_queue=QUEUE, concurrency=2,
                                         batch_size=4, on_progress=seen.append)
    assert counts == {"started": 5, "already running": 1, "already closed": 0, "refused": 0}
    assert sorted(r.loan_id for r in seen) == sorted(loan.loan_id for loan in loans)
    assert [r.outcome for r in seen if r.loan_id == loans[0].loan_id] == ["already running"]


async def test_updates_answer_or_refuse(dev_env: WorkflowEnvironment, cases: list[str],
                                       loan_id: str) -> None:
    client, loan = dev_env.client, make_loan(loan_id, due_soon())
    cases.append(loan_id)
    await case_service.start_loan(client, loan, task_queue=QUEUE)
    soon = datetime.now(UTC).date() + timedelta(days=3)

    def promise(amount: str, currency: str = "CNY") -> PromiseInput:
        return PromiseInput("a1", Decimal(amount), currency, soon)

    with pytest.raises(Refused) as refused:
        await updates.promise(client, loan_id, promise("5000.00"))
    assert str(refused.value) == "promised amount 5000.00 exceeds the balance 1200.00"
    with pytest.raises(Refused, match="promised currency USD differs from the loan's CNY"):
        await updates.promise(client, loan_id, promise("100.00", "USD"))
    result = await updates.promise(client, loan_id, promise("300.00"))
    assert result.accepted and result.message.startswith("promise recorded: 300.00 CNY")
    assert result.outstanding == Decimal("1200.00")
    status = await case_service.status(client, loan_id)
    assert status.promise is not None and status.assigned_agent == "a1"
    kinds = [e.kind for e in await case_service.timeline(client, loan_id)]
    assert kinds[0] == "case_opened" and "promise" in kinds


async def test_unknown_loan(dev_env: WorkflowEnvironment, dev_worker: Worker) -> None:
    client, missing = dev_env.client, "NOSUCHLOAN1"
    for call in (
        updates.cease(client, missing, CeaseInput("a1")),
        case_service.status(client, missing),
        case_service.timeline(client, missing),
        case_service.pay(client, missing, PaymentInput("p1", Decimal("1.00"), "CNY")),
    ):
        with pytest.raises(NotFound, match=f"^no collection case for loan {missing}$"):
            await call


async def test_payments_reach_the_case(dev_env: WorkflowEnvironment, cases: list[str],
                                       loan_id: str) -> None:
    """pay_with_start opens the case with the payment applied; pay adds to a running case."""
    client, loan = dev_env.client, make_loan(loan_id, due_soon())
    cases.append(loan_id)
    await case_service.pay_with_start(client, loan, PaymentInput("p1", Decimal("200.00"), "CNY"),
                                    task_queue=QUEUE)
    status = await eventually(lambda: case_service.status(client, loan_id),
                              lambda s: s.paid_total > 0)
    assert (status.paid_total, status.outstanding) == (Decimal("200.00"), Decimal("1000.00"))
    await case_service.pay(client, loan_id, PaymentInput("p2", Decimal("100.00"), "CNY"))
    await case_service.pay_with_start(client, loan, PaymentInput("p3", Decimal("50.00"), "CNY"),
                                    task_queue=QUEUE)
    status = await eventually(lambda: case_service.status(client, loan_id),
                              lambda s: s.paid_total == Decimal("350.00"))
    assert status.outstanding == Decimal("850.00")
    assert await runs_of(client, loan_id) == 1


def server_env(dev_env: WorkflowEnvironment, tmp_path: Path) -> dict[str, str | None]:
    # An empty state folder: no dev key file, so no codec, like the session's dev server.
    return {"TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": dev_env.client.namespace, "STATE_DIR": str(tmp_path),
            "COLLECTIONS_ENCRYPTION_KEYS": None, "TASK_QUEUE": QUEUE}


async def test_cli_against_the_server(dev_env: WorkflowEnvironment, cases: list[str], loan_id: str,
                                      tmp_path: Path) -> None:
    """The CLI end to end; run in a thread, because the worker needs this event loop meanwhile."""
    env = server_env(dev_env, tmp_path)

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(cli, *args, env=env)

    cases.append(loan_id)
    await case_service.start_loan(dev_env.client, make_loan(loan_id, due_soon()), task_queue=QUEUE)
    paid = await run("pay", loan_id, "--amount", "100.00", "--currency", "CNY",
                     "--payment-id", "p1")
    assert paid.exit_code == 0, paid.output
    shown = await eventually(lambda: run("status", loan_id, "--json"),
                             lambda r: '"paid_total": "100.00"' in r.stdout)
    assert '"outstanding": "1100.00"' in shown.stdout
    panel = await run("status", loan_id)
    assert "1100.00 CNY" in panel.stdout and "policy" in panel.stdout
    pay_by = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
    refused = await run("settle", loan_id, "--agent", "a1", "--amount", "100.00",
                        "--currency", "CNY", "--pay-by", pay_by)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "settlement 100.00 is below the policy's floor of 550.00"
    held = await run("dispute", loan_id, "--actor", "a1", "--reason", "not my loan")
    assert held.exit_code == 0, held.output
    assert "dispute hold placed" in held.stdout and "outstanding: 1100.00 CNY" in held.stdout
    missing = await run("timeline", "NOSUCHLOAN2")
    assert missing.exit_code == 3
    assert missing.stderr == "no collection case for loan NOSUCHLOAN2\n"


async def test_open_tasks_reads_the_work_queue(pool: asyncpg.Pool, pg_dsn: str,
                                               loan_id: str) -> None:
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by, "
        "created_at) VALUES ($1, $2, $3, 'visit', 'late-visit', 9, $4, $5)",
        f"{loan_id}/late-visit", loan_id, workflow_id_for(loan_id), now + timedelta(days=7), now,
    )
    rows = await tasks.open_tasks(pg_dsn, kind="visit", limit=1000)
    mine = [r for r in rows if r.loan_id == loan_id]
    assert [(r.kind, r.step_id, r.priority, r.task_key) for r in mine] == [
        ("visit", "late-visit", 9, f"{loan_id}/late-visit")]
    # Recorded before tasks carried their window: no window, no caps, shown as "-".
    assert (mine[0].window, mine[0].caps_left, mine[0].next_period()) == ("", {}, None)
    await pool.execute(
        "INSERT INTO tasks (task_key, loan_id, workflow_id, kind, step_id, priority, due_by, "
        "created_at, status, reason) VALUES ($1, $2, $3, 'call', 'early-call', 5, $4, $5, "
        "'withdrawn', 'dispute hold')",
        f"{loan_id}/early-call", loan_id, workflow_id_for(loan_id), now + timedelta(days=1), now,
    )
    calls = await tasks.open_tasks(pg_dsn, kind="call", limit=1000)
    assert loan_id not in {r.loan_id for r in calls}  # withdrawn: out of the queue
