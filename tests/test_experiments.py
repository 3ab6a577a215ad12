"""Champion/challenger (issue 21, item 6): stable assignment by hash, the arm pinned with the
policy (the challenger's ladder), the loader's checks, the arm recorded in PostgreSQL and as a
search attribute, the `list --arm` filter, and the arms compared in the report."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import typer
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from cli import operators
from contracts.policy import Challenger, ResolvedPolicy
from policies import experiments
from policies.loader import (
    POLICIES_DIR,
    PolicyError,
    load_policies,
    load_rule_packs,
    parse_policy,
    resolve_policy,
    validate_files,
)
from service.case_filters import visibility_query
from service.errors import BadInput
from service.experiment_report import ArmFigures, compare, experiment_report
from service.listing import list_cases, list_cases_db
from tests.helpers import eventually, make_loan, start_case, today_of

ROOT = Path(__file__).resolve().parent.parent
IDS = [f"L{n:06d}" for n in range(10_000)]
DEFAULT_TEXT = (POLICIES_DIR / "default.toml").read_text()


# --------------------------------------------------------------------------- stable assignment


def test_shares_hold_over_10000_ids() -> None:
    challengers = [Challenger(policy="fast", share=0.1), Challenger(policy="gentle", share=0.2)]
    counts = Counter(experiments.assign("exp-a", challengers, i) for i in IDS)
    assert set(counts) == {"fast", "gentle", experiments.CHAMPION}
    # The binomial standard deviation of a 10% share over 10,000 ids is 30 ids; allow 4 of them.
    for arm, share in [("fast", 0.1), ("gentle", 0.2), (experiments.CHAMPION, 0.7)]:
        sd = math.sqrt(len(IDS) * share * (1 - share))
        assert abs(counts[arm] - share * len(IDS)) < 4 * sd, (arm, counts)
    # Positions are uniform in [0, 1): every tenth of the interval holds about a tenth of the ids.
    tenths = Counter(int(experiments.position("exp-a", i) * 10) for i in IDS)
    assert set(tenths) == set(range(10)) and all(abs(n - 1000) < 120 for n in tenths.values())


def test_the_same_id_always_gets_the_same_arm() -> None:
    challengers = [Challenger(policy="fast", share=0.25)]
    first = [experiments.assign("exp-b", challengers, i) for i in IDS[:500]]
    assert first == [experiments.assign("exp-b", challengers, i) for i in IDS[:500]]
    # Another process with another hash seed (a restarted worker, a re-run) agrees.
    script = ("from contracts.policy import Challenger; from policies import experiments; "
              "c = [Challenger(policy='fast', share=0.25)]; "
              "print(','.join(experiments.assign('exp-b', c, f'L{n:06d}') for n in range(500)))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip().split(",") == first
    # Adding a challenger only takes loans from the champion: no loan leaves "fast".
    more = [*challengers, Challenger(policy="gentle", share=0.1)]
    after = [experiments.assign("exp-b", more, i) for i in IDS[:500]]
    assert all(b == "fast" for a, b in zip(first, after, strict=True) if a == "fast")
    assert {a for a, b in zip(first, after, strict=True) if b == "gentle"} == {
        experiments.CHAMPION}


def test_two_experiments_are_independent() -> None:
    one = [Challenger(policy="x", share=0.2)]
    two = [Challenger(policy="y", share=0.3)]
    joint = Counter((experiments.assign("exp-one", one, i), experiments.assign("exp-two", two, i))
                    for i in IDS)
    n = len(IDS)
    share = {"x": 0.2, "y": 0.3}
    for (a, b), count in joint.items():
        pa = share.get(a, 0.8)
        pb = share.get(b, 0.7)
        expected = pa * pb * n
        # Joint shares are the product of the two: within 4 binomial standard deviations.
        assert abs(count - expected) < 4 * math.sqrt(n * pa * pb * (1 - pa * pb)), joint
    # Chi-square test of independence on the 2x2 table, 1 degree of freedom: below 10.83 (p=0.001).
    rows = {a: sum(v for (x, _), v in joint.items() if x == a) for a in ("x", "champion")}
    cols = {b: sum(v for (_, y), v in joint.items() if y == b) for b in ("y", "champion")}
    chi2 = sum((joint[(a, b)] - rows[a] * cols[b] / n) ** 2 / (rows[a] * cols[b] / n)
               for a in rows for b in cols)
    assert chi2 < 10.83, (chi2, joint)


# --------------------------------------------------------------------------- policy files


def policy_text(name: str, *, experiment: str | None = None, challengers: str = "",
                version: str = "2026.11.1", fast: bool = False) -> str:
    """The shipped default policy renamed; `fast` sends the standard segment to the accelerated
    ladder; `challengers` is the TOML value of the `challengers` key."""
    text = DEFAULT_TEXT.replace('name = "default"', f'name = "{name}"', 1)
    text = text.replace('version = "2026.11.1"', f'version = "{version}"', 1)
    head = ""
    if experiment is not None:
        head += f'experiment = "{experiment}"\n'
    if challengers:
        head += f"challengers = {challengers}\n"
    text = text.replace('rule_pack = "cn"\n', f'rule_pack = "cn"\n{head}', 1)
    if fast:
        standard = 'name = "standard"\nladder = "standard"'
        assert standard in text
        text = text.replace(standard, 'name = "standard"\nladder = "accelerated"')
    return text


def write_experiment(folder: Path, experiment: str, share: float = 0.3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "champ.toml").write_text(policy_text(
        "champ", experiment=experiment,
        challengers=f'[{{ policy = "fast", share = {share} }}]'))
    (folder / "fast.toml").write_text(policy_text("fast", version="2026.12.1", fast=True))
    return folder


def in_arm(experiment: str, arm: str, count: int = 1, prefix: str = "X",
           share: float = 0.3) -> list[str]:
    """The first `count` loan ids `prefix`0, `prefix`1, ... that fall in `arm`."""
    challengers = [Challenger(policy="fast", share=share)]
    ids = (f"{prefix}{n}" for n in range(100_000))
    found = [i for i in ids if experiments.assign(experiment, challengers, i) == arm][:count]
    assert len(found) == count
    return found


def test_a_loan_assigned_to_the_challenger_follows_its_ladder(tmp_path: Path) -> None:
    packs = load_rule_packs()
    policies = load_policies(write_experiment(tmp_path, "fast-ladder"), rule_packs=packs)
    challenger_loan = make_loan(in_arm("fast-ladder", "fast")[0], date(2026, 11, 1),
                                policy="champ")
    champion_loan = make_loan(in_arm("fast-ladder", experiments.CHAMPION)[0], date(2026, 11, 1),
                              policy="champ")
    fast = resolve_policy(challenger_loan, policies=policies, rule_packs=packs)
    champ = resolve_policy(champion_loan, policies=policies, rule_packs=packs)
    assert (fast.name, fast.version, fast.ladder_name) == ("fast", "2026.12.1", "accelerated")
    assert fast.steps == policies["fast"][0].ladders["accelerated"]
    assert fast.source_sha256 == policies["fast"][1]
    assert (fast.experiment, fast.arm, fast.experiment_arm) == (
        "fast-ladder", "fast", "fast-ladder:fast")
    assert (champ.name, champ.ladder_name, champ.arm) == ("champ", "standard", "champion")
    assert champ.steps == policies["champ"][0].ladders["standard"]
    # The same loan resolves to the same arm every time; the challenger's own settings are pinned.
    assert resolve_policy(challenger_loan, policies=policies, rule_packs=packs) == fast
    assert "challengers" not in fast.settings.model_dump()
    # A policy with no challengers assigns nothing; a case pinned before experiments existed reads.
    plain = resolve_policy(make_loan("X1", date(2026, 11, 1), policy="fast"),
                           policies=policies, rule_packs=packs)
    assert (plain.experiment, plain.arm, plain.experiment_arm) == (None, None, None)
    old = fast.model_dump(mode="json")
    del old["experiment"], old["arm"]
    assert ResolvedPolicy.model_validate(old).experiment_arm is None


@pytest.mark.parametrize(("challengers", "problem"), [
    ('[{ policy = "fast", share = 1.5 }]',
     "challenger 1 'fast': share must lie between 0 and 1 (exclusive), got 1.5"),
    ('[{ policy = "fast", share = 0 }]',
     "challenger 1 'fast': share must lie between 0 and 1 (exclusive), got 0.0"),
    ('[{ policy = "fast", share = 0.6 }, { policy = "slow", share = 0.4 }]',
     "challenger shares add up to 1: they must leave the champion some loans (a sum below 1)"),
    ('[{ policy = "fast", share = 0.1 }, { policy = "fast", share = 0.1 }]',
     "challenger 2 'fast': named twice"),
    ('[{ policy = "champ", share = 0.1 }]',
     "challenger 1 'champ': a policy cannot challenge itself"),
    ('[{ policy = "fast", portion = 0.1 }]', "challengers[0]: unknown field 'portion'"),
])
def test_the_loader_refuses_bad_challengers(challengers: str, problem: str) -> None:
    text = policy_text("champ", experiment="e1", challengers=challengers)
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "champ.toml", rule_packs=load_rule_packs(), templates=None)
    assert f"champ.toml: {problem}" in exc.value.problems


def test_the_loader_wants_a_named_experiment_and_known_challengers(tmp_path: Path) -> None:
    packs = load_rule_packs()
    unnamed = policy_text("champ", challengers='[{ policy = "fast", share = 0.1 }]')
    with pytest.raises(PolicyError, match="experiment: name the experiment"):
        parse_policy(unnamed, "champ.toml", rule_packs=packs, templates=None)
    bad_name = policy_text("champ", experiment="a b",
                           challengers='[{ policy = "fast", share = 0.1 }]')
    with pytest.raises(PolicyError, match=r"experiment: 'a b' must be 1-64 letters"):
        parse_policy(bad_name, "champ.toml", rule_packs=packs, templates=None)

    folder = tmp_path / "unknown"
    folder.mkdir()
    champ = folder / "champ.toml"
    champ.write_text(policy_text("champ", experiment="e1",
                                 challengers='[{ policy = "nope", share = 0.1 }]'))
    message = "champ.toml: challenger 1 'nope': no policy named 'nope' (known: none)"
    with pytest.raises(PolicyError) as exc:
        load_policies(folder, rule_packs=packs)
    assert exc.value.problems == [message]
    # `policy validate` says the same, knowing the shipped policies and the files it was given.
    errors = validate_files([champ], templates=None)
    assert errors == [message.replace("(known: none)", "(known: default, demo, us_default)")]
    assert validate_files([*write_experiment(tmp_path / "good", "e2").glob("*.toml")],
                          templates=None) == []
    # A challenger that takes fewer jurisdictions than the champion would fail some loans' starts.
    narrow = tmp_path / "narrow"
    write_experiment(narrow, "e3")
    (narrow / "fast.toml").write_text(policy_text("fast", fast=True).replace(
        'rule_pack = "cn"\n', 'rule_pack = "cn"\njurisdictions = ["CN"]\n', 1))
    with pytest.raises(PolicyError, match="challenger 1 'fast': takes only CN, the champion "
                                          "takes any jurisdiction"):
        load_policies(narrow, rule_packs=packs)
    # One level only: a challenger running challengers of its own is refused.
    nested = tmp_path / "nested"
    write_experiment(nested, "e4")
    (nested / "fast.toml").write_text(policy_text(
        "fast", experiment="e5", challengers='[{ policy = "champ", share = 0.1 }]'))
    with pytest.raises(PolicyError, match="has challengers of its own"):
        load_policies(nested, rule_packs=packs)


# --------------------------------------------------------------------------- filters


def test_arm_filters() -> None:
    base = "WorkflowType = 'CollectionWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"
    assert visibility_query(arm="fast-ladder:fast") == (
        f"{base} AND ExperimentArm = 'fast-ladder:fast'")
    assert visibility_query(arm="fast-ladder") == (
        f"{base} AND ExperimentArm STARTS_WITH 'fast-ladder:'")
    for bad in ["x' OR '1'='1", "a:b:c", ":fast", "e:", 7]:
        with pytest.raises(BadInput, match="arm"):
            visibility_query(arm=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the arms compared


def test_intervals_by_hand() -> None:
    """Cure: two proportions, 2,500 cases each, 20% against 22%."""
    champion = ArmFigures("e", "champion", "CNY", 2500, Decimal(2500), Decimal(1000), 500)
    challenger = ArmFigures("e", "fast", "CNY", 2500, Decimal(2500), Decimal(1000), 550)
    (c,) = compare([champion, challenger])
    se = math.sqrt(0.2 * 0.8 / 2500 + 0.22 * 0.78 / 2500)
    assert c.cure.estimate == Decimal("0.0200")
    assert c.cure.low == Decimal(f"{0.02 - 1.959964 * se:.4f}") == Decimal("-0.0026")
    assert c.cure.high == Decimal(f"{0.02 + 1.959964 * se:.4f}") == Decimal("0.0426")
    assert c.readable and c.note == ""
    (small,) = compare([champion, challenger], min_cases=3000)
    assert not small.readable
    assert small.note == ("too small to read: champion has 2,500 case(s), under the minimum of "
                          "3,000; fast has 2,500 case(s), under the minimum of 3,000")
    # No champion in a currency: nothing to compare against.
    assert compare([challenger]) == []


T0 = datetime(2024, 3, 1, tzinfo=UTC)
AS_OF = T0 + timedelta(days=45)

# arm -> cases (placed, payments [(amount, day)], state, closed day, opened day)
BOOK: dict[str, list[tuple[str, list[tuple[str, int]], str, int | None, int]]] = {
    "champion": [
        ("1000.00", [("400.00", 5), ("600.00", 9)], "paid", 9, 0),
        ("1000.00", [("500.00", 20)], "active", None, 0),
        ("1000.00", [], "active", None, 0),
        ("1000.00", [], "written_off", 40, 0),
        ("3000.00", [("3000.00", 50)], "paid", 50, 0),  # paid after AS_OF: active, nothing in
        ("9000.00", [], "active", None, 60),  # opened after AS_OF: not counted
    ],
    "fast": [
        ("1000.00", [("1000.00", 3)], "paid", 3, 0),
        ("1000.00", [("1000.00", 30)], "settled", 30, 0),
        ("2000.00", [], "active", None, 0),
        ("1000.00", [("500.00", 10)], "active", None, 0),
    ],
}


async def insert_book(pool: asyncpg.Pool, experiment: str) -> dict[str, list[str]]:
    loans: dict[str, list[str]] = {}
    async with pool.acquire() as conn, conn.transaction():
        for arm, cases in BOOK.items():
            policy = "champ" if arm == "champion" else arm
            for n, (placed, payments, state, closed, opened) in enumerate(cases):
                loan_id = f"{experiment}-{arm}-{n}"
                loans.setdefault(arm, []).append(loan_id)
                paid = sum((Decimal(a) for a, _ in payments), Decimal(0))
                closed_at = None if closed is None else T0 + timedelta(days=closed)
                opened_at = T0 + timedelta(days=opened)
                await conn.execute(
                    """INSERT INTO cases (loan_id, workflow_id, borrower_key, policy_name,
                           policy_version, segment, rule_pack, currency, amount_placed,
                           outstanding, paid_total, stage, state, days_past_due, due_date,
                           opened_at, closed_at, updated_at, experiment, arm)
                       VALUES ($1, $2, $3, $4, 'v1', 'standard', 'cn', 'CNY', $5, $6, $7, 'early',
                               $8, 0, $9, $10, $11, $12, $13, $14)""",
                    loan_id, f"collection-{loan_id}", f"b:{loan_id}", policy, Decimal(placed),
                    Decimal(placed) - paid, paid, state, opened_at.date(), opened_at, closed_at,
                    closed_at or opened_at, experiment, arm)
                for i, (amount, day) in enumerate(payments):
                    await conn.execute(
                        "INSERT INTO payments (loan_id, payment_id, amount, currency, paid_at)"
                        " VALUES ($1, $2, $3, 'CNY', $4)",
                        loan_id, f"p{i}", Decimal(amount), T0 + timedelta(days=day))
    return loans


def ratio_variance(cases: list[tuple[float, float]]) -> float:
    """The ratio estimator's variance from the cases themselves (collected, placed)."""
    n = len(cases)
    big_c, big_p = sum(c for c, _ in cases), sum(p for _, p in cases)
    r = big_c / big_p
    return n / ((n - 1) * big_p**2) * sum((c - r * p) ** 2 for c, p in cases)


def cli_app() -> typer.Typer:
    app = typer.Typer()
    operators.commands.register(app)
    return app


async def test_report_compares_arms_on_rows_inserted_by_hand(
    pool: asyncpg.Pool, pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    experiment = f"exp-{uuid.uuid4().hex[:8]}"
    loans = await insert_book(pool, experiment)
    report = await experiment_report(pool, as_of=AS_OF, experiment=experiment, min_cases=4)
    champion, fast = report.arms
    # Champion: five cases opened by AS_OF, 4000+3000 placed, 1000+500 collected, one cured.
    assert (champion.arm, champion.cases, champion.placed, champion.collected, champion.cured) == (
        "champion", 5, Decimal("7000.00"), Decimal("1500.00"), 1)
    assert (champion.recovery_rate, champion.cure_rate) == (Decimal("0.2143"), Decimal("0.2000"))
    # Fast: four cases, 5000 placed, 2500 collected, paid and settled.
    assert (fast.arm, fast.cases, fast.placed, fast.collected, fast.cured) == (
        "fast", 4, Decimal("5000.00"), Decimal("2500.00"), 2)
    assert (fast.recovery_rate, fast.cure_rate) == (Decimal("0.5000"), Decimal("0.5000"))

    (c,) = report.comparisons
    z = 1.959964
    var_champion = ratio_variance([(1000, 1000), (500, 1000), (0, 1000), (0, 1000), (0, 3000)])
    var_fast = ratio_variance([(1000, 1000), (1000, 1000), (0, 2000), (500, 1000)])
    diff = 0.5 - 1500 / 7000
    half = z * math.sqrt(var_champion + var_fast)
    assert c.recovery.estimate == Decimal(f"{diff:.4f}")
    assert c.recovery.low == Decimal(f"{diff - half:.4f}")
    assert c.recovery.high == Decimal(f"{diff + half:.4f}")
    half = z * math.sqrt(0.2 * 0.8 / 5 + 0.5 * 0.5 / 4)
    assert (c.cure.estimate, c.cure.low, c.cure.high) == (
        Decimal("0.3000"), Decimal(f"{0.3 - half:.4f}"), Decimal(f"{0.3 + half:.4f}"))
    assert c.readable
    # The stated minimum: an arm of four cases is too small to read.
    (c,) = (await experiment_report(pool, as_of=AS_OF, experiment=experiment)).comparisons
    assert not c.readable and "fast has 4 case(s), under the minimum of 2,500" in c.note
    # By policy: the experiments that one of the arms' policies runs in.
    by_policy = await experiment_report(pool, as_of=AS_OF, policy_name="fast")
    assert {a.arm for a in by_policy.arms if a.experiment == experiment} == {"champion", "fast"}

    # `list --arm` from PostgreSQL.
    rows = await list_cases_db(pool, arm=f"{experiment}:fast")
    assert {r.loan_id for r in rows} == set(loans["fast"])
    assert {r.arm for r in rows} == {f"{experiment}:fast"}
    rows = await list_cases_db(pool, arm=experiment, limit=1000)
    assert {r.loan_id for r in rows} == set(loans["fast"] + loans["champion"])

    # The CLI: `report --json` carries the comparison; the table says what it cannot read.
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli_app(), [
        "report", "--json", "--policy", "fast", "--as-of", AS_OF.isoformat()])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)["experiments"]
    (mine,) = [x for x in doc["comparisons"] if x["experiment"] == experiment]
    assert mine["cases"] == {"champion": 5, "challenger": 4} and not mine["readable"]
    assert mine["cure_difference"]["estimate"] == "0.3000"
    result = await asyncio.to_thread(runner.invoke, cli_app(), [
        "report", "--policy", "fast", "--as-of", AS_OF.isoformat(), "--min-arm-cases", "4"])
    assert result.exit_code == 0, result.output
    assert "Challenger minus champion" in result.stdout and "+30.00 pt" in result.stdout
    result = await asyncio.to_thread(runner.invoke, cli_app(), [
        "list", "--source", "db", "--arm", f"{experiment}:fast"])
    assert result.exit_code == 0, result.output
    assert f"{experiment}:fast" in result.stdout and "ExperimentArm" in result.stdout


# --------------------------------------------------------------------------- live cases


async def test_a_live_case_records_its_arm(
    dev_env: WorkflowEnvironment, dev_worker: Worker, pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    """The arm pinned in the policy reaches the `cases` row and the ExperimentArm attribute."""
    client = dev_env.client
    experiment = f"live-{uuid.uuid4().hex[:8]}"
    packs = load_rule_packs()
    policies = load_policies(write_experiment(tmp_path, experiment), rule_packs=packs)
    today = today_of(await dev_env.get_current_time())
    prefix = f"EXP{uuid.uuid4().hex[:6]}-"
    ids = in_arm(experiment, "fast", 2, prefix) + in_arm(experiment, "champion", 2, prefix)
    loans = [make_loan(i, today + timedelta(days=30), policy="champ") for i in ids]
    pins = {ln.loan_id: resolve_policy(ln, policies=policies, rule_packs=packs) for ln in loans}
    handles = [await start_case(client, ln, "dev-collections", policy=pins[ln.loan_id])
               for ln in loans]
    try:
        fast = set(ids[:2])
        assert {i for i, p in pins.items() if p.arm == "fast"} == fast
        rows = await eventually(lambda: list_cases(client, arm=f"{experiment}:fast"),
                                lambda rows: {r.loan_id for r in rows} == fast, timeout=30)
        assert {(r.arm, r.policy_version) for r in rows} == {
            (f"{experiment}:fast", "fast@2026.12.1")}
        await eventually(lambda: list_cases(client, arm=experiment),
                         lambda rows: {r.loan_id for r in rows} == set(pins), timeout=30)
        db = await eventually(lambda: list_cases_db(pool, arm=f"{experiment}:champion"),
                              lambda rows: {r.loan_id for r in rows} == set(pins) - fast,
                              timeout=30)
        assert {r.policy_version for r in db} == {"champ@2026.11.1"}
        stored = await pool.fetch(
            "SELECT experiment, arm, segment FROM cases WHERE experiment = $1", experiment)
        assert sorted((r["arm"], r["segment"]) for r in stored) == [
            ("champion", "standard")] * 2 + [("fast", "standard")] * 2
    finally:
        for h in handles:
            await h.terminate("test over")
