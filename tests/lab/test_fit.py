"""`lab fit` learns the borrower it was shown: a book played through the real workflow on the
time-skipping server in behaviour mode, its records written to PostgreSQL as a real case's are,
with borrowers drawn from a known model; the model fitted from those records is that model, within
the stated tolerances.

What the records can show sets what is compared. Whether a message was read is not recorded, so
for message channels the fit gives each chance per message sent (`answered` = 1): compared with
the known model's `answered x chance`. Calls are worked by an agent who reports whether the
borrower answered: `answered` and the chances given an answer are compared directly.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

import starter
from contracts.behaviour import BehaviourModel, Response
from contracts.case_io import CollectionInput
from contracts.messages import CaseResult, LoanInput, Stage
from contracts.names import WORKFLOW_TYPE, workflow_id_for
from contracts.policy import ResolvedPolicy, Step
from lab.fit import estimate, fit_model
from lab.fit_history import read_history
from lab.model_file import load_model, write_model
from tests.helpers import make_loan, pinned, today_of

LOANS = 100
SEED = 21
# The tolerance: each fitted chance within 4 standard errors of the known one (a binomial
# share's, from the number of contacts or promises behind it) plus 0.005. The draws are keyed by
# the test server's clock, which starts at the real time, so each run sees other borrowers.
SE_TOLERANCE = 4.0
SLACK = 0.005


def close(fitted: float, known: float, n: float) -> bool:
    se = math.sqrt(max(known * (1 - known), 0.01 * 0.99) / max(n, 1))
    return abs(fitted - known) <= SE_TOLERANCE * se + SLACK


SMS = Response(answered=0.7, pays_full=0.06, pays_part=0.06, part_share=0.5, promises=0.12,
               keeps_promise=0.7, asks_plan=0.0, disputes=0.0, opts_out=0.0, wrong_number=0.03,
               delay_days=2)
CALL = Response(answered=0.55, pays_full=0.1, pays_part=0.08, part_share=0.4, promises=0.25,
                keeps_promise=0.6, wrong_number=0.04, delay_days=1)
EMAIL = Response(answered=0.4, pays_full=0.08, pays_part=0.04, promises=0.08, keeps_promise=0.6,
                 delay_days=3)
KNOWN = BehaviourModel(name="known", version="1", default=Response(),
                       by_stage={"early": {"sms": SMS, "call": CALL, "email": EMAIL}})


def ladder() -> list[Step]:
    """One contact a day for three weeks, all in the early stage, written off at D+30: one
    channel at a time, each at an hour of its own, in no fixed rotation (so a reaction follows
    one contact, and only the contact it answered is always the same delay before a payment)."""
    days = [("sms", 9), ("call", 13), ("email", 17)] * 7
    random.Random(5).shuffle(days)
    steps = []
    for day, (channel, hour) in enumerate(days, start=1):
        if channel == "call":
            steps.append(Step(id=f"call-{day}", day=day, hour=hour, stage=Stage.EARLY, kind="call"))
        else:
            steps.append(Step(id=f"{channel}-{day}", day=day, hour=hour, stage=Stage.EARLY,
                              kind="message", channels=[channel], template="early_reminder"))
    steps.append(Step(id="write-off", day=30, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
                      template="write_off_notice", tone="formal", notice="collection_ending"))
    return steps


def policy_for(loan_id: str, due: date) -> tuple[LoanInput, ResolvedPolicy]:
    loan = make_loan(loan_id, due)
    policy = pinned(loan)
    return loan, policy.model_copy(update={"steps": ladder(), "ladder_name": "fit-test"})


@pytest.fixture(scope="module")
async def played(ts_env: WorkflowEnvironment, ts_worker: Worker) -> str:
    """The book's cases through the real workflow, recorded in PostgreSQL; the loans' prefix."""
    prefix = f"FIT{uuid.uuid4().hex[:6]}-"
    due = today_of(await ts_env.get_current_time()) + timedelta(days=1)
    handles = []
    with ts_env.auto_time_skipping_disabled():
        for i in range(LOANS):
            loan, policy = policy_for(f"{prefix}{i:03d}", due)
            handles.append(await ts_env.client.start_workflow(
                WORKFLOW_TYPE, CollectionInput(loan=loan, policy=policy, behaviour=KNOWN,
                                               seed=SEED),
                id=workflow_id_for(loan.loan_id), task_queue=ts_worker.task_queue,
                result_type=CaseResult))
        # Skip time once for the whole book (each result() would lock and unlock on its own).
        await ts_env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        try:
            results = await asyncio.gather(*(h.result() for h in handles))
        finally:
            await ts_env.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
    assert len(results) == LOANS
    return prefix


async def test_fit_recovers_the_known_model(played: str, pool: asyncpg.Pool,
                                            tmp_path: Path) -> None:
    history = await read_history(pool, loan_prefix=played)
    fit = estimate(history, name="refit", min_contacts=30)
    assert fit.cases == LOANS and fit.model.name == "refit"
    got = fit.model.by_stage["early"]
    assert set(got) == {"sms", "call", "email"}
    sent = Counter(c.channel for c in history.contacts)
    usable = Counter(c.channel for c in history.contacts if not c.wrong_number)
    answered = sum(1 for c in history.contacts if c.channel == "call" and c.answered)
    misses = []

    def check(what: str, fitted: float, known: float, n: float) -> None:
        if not close(fitted, known, n):
            misses.append(f"{what}: fitted {fitted:.4f}, known {known:.4f}, n {n}")

    for channel, known in (("sms", SMS), ("email", EMAIL)):
        f = got[channel]
        assert f.answered == 1.0 and f.delay_days == known.delay_days, (channel, f)
        for name in ("pays_full", "pays_part", "promises"):
            check(f"{channel}.{name}", getattr(f, name), known.answered * getattr(known, name),
                  usable[channel])
        check(f"{channel}.wrong_number", f.wrong_number, known.wrong_number, sent[channel])
    f = got["call"]
    assert f.delay_days == CALL.delay_days, f
    check("call.answered", f.answered, CALL.answered, usable["call"])
    check("call.wrong_number", f.wrong_number, CALL.wrong_number, sent["call"])
    for name in ("pays_full", "pays_part", "promises"):
        check(f"call.{name}", getattr(f, name), getattr(CALL, name), answered)
    promises = sum(1 for e in history.events if e.kind == "promise")
    for channel, known in (("sms", SMS), ("call", CALL)):
        check(f"{channel}.keeps_promise", got[channel].keeps_promise, known.keeps_promise,
              promises / 3)
    assert abs(f.part_share - CALL.part_share) <= 0.01
    assert not misses, misses
    # `lab fit` from the database gives the same model, and the file it writes loads back.
    assert (await fit_model(pool, loan_prefix=played, name="refit", min_contacts=30)).model \
        == fit.model
    path = tmp_path / "fitted.toml"
    write_model(fit.model, path, header=fit.header())
    assert load_model(path) == fit.model


async def test_fit_since_and_an_empty_history(played: str, pool: asyncpg.Pool) -> None:
    later = await read_history(pool, loan_prefix=played,
                               since=max(c.at for c in (await read_history(
                                   pool, loan_prefix=played)).contacts) + timedelta(seconds=1))
    assert later.contacts == []
    empty = estimate(later, name="nothing")
    assert empty.model.by_stage == {} and empty.contacts == 0


def test_lab_fit_command_writes_a_model_file(played: str, pg_dsn: str, tmp_path: Path) -> None:
    """`collect lab fit` against the database: every case's history, written as a model file."""
    out = tmp_path / "fitted.toml"
    result = CliRunner().invoke(starter.app, ["lab", "fit", "--since", "2020-01-01", "--out",
                                              str(out), "--name", "from-cli"],
                                env={"DATABASE_URL": pg_dsn, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.name == "from-cli" and "early" in model.by_stage
    assert "contacts of" in result.stdout and str(out) in result.stdout
    assert out.read_text(encoding="utf-8").startswith("# Fitted by `collect lab fit`")
