"""`collect lab run`: a backtest of the shipped policy against a draft challenger on a synthetic
book, through the command line. A faster, denser ladder contacts more and cures sooner; the same
seed gives the same figures; a broken policy or model is refused with the loader's own line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import starter
from cli.exit_codes import EXIT_CODES
from lab.backtest import backtest_json, run_backtest
from lab.model_file import load_model
from lab.prices import load_prices
from lab.synthetic import synthetic_book
from service.errors import ErrorKind
from service.policy_catalog import validate_policies

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.toml"
MODEL = ROOT / "lab" / "models" / "default.toml"
BAD_INPUT = EXIT_CODES[ErrorKind.BAD_INPUT]
LOANS = 150
# Extra reminders in the first two weeks, on top of the accelerated ladder for every segment.
EXTRA_DAYS = (2, 3, 4, 6, 8, 10, 12)


def cli(*args: str) -> Result:
    return CliRunner().invoke(starter.app, list(args), env={"COLUMNS": "200"})


def _day(block: str) -> int:
    found = re.search(r"(?m)^day = (-?\d+)", block)
    return int(found[1]) if found else 0


def faster_policy(text: str) -> str:
    """default.toml as a draft named `faster`: every segment on the accelerated ladder, with a
    text on each of EXTRA_DAYS (kept in day order; write-off stays last)."""
    text = text.replace('name = "default"', 'name = "faster"', 1)
    text = re.sub(r'(?m)^ladder = "\w+"', 'ladder = "accelerated"', text)
    blocks = re.split(r"(?m)^(?=\[)", text)
    mine = [i for i, b in enumerate(blocks) if b.startswith("[[ladders.accelerated]]")]
    steps = [blocks[i] for i in mine]
    for d in EXTRA_DAYS:
        stage, template = ("early", "early_reminder") if d < 5 else ("middle", "firm_reminder")
        steps.append(f'[[ladders.accelerated]]\nid = "extra-sms-{d}"\nday = {d}\nhour = 18\n'
                     f'stage = "{stage}"\nkind = "message"\nchannels = ["sms"]\n'
                     f'template = "{template}"\n\n')
    steps.sort(key=_day)  # stable: same-day steps keep their order, extras after
    kept = [b for i, b in enumerate(blocks) if i not in mine]
    at = mine[0]
    return "".join(kept[:at] + steps + kept[at:])


@pytest.fixture(scope="module")
def drafts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("drafts")
    faster = folder / "faster.toml"
    faster.write_text(faster_policy(DEFAULT_POLICY.read_text(encoding="utf-8")), encoding="utf-8")
    broken = folder / "broken.toml"
    broken.write_text(faster.read_text(encoding="utf-8").replace(
        'id = "extra-sms-2"\nday = 2', 'id = "extra-sms-2"\nday = 200'), encoding="utf-8")
    bad_model = folder / "bad_model.toml"
    bad_model.write_text(MODEL.read_text(encoding="utf-8").replace(
        "[stages.early.call]\nanswered = 0.4", "[stages.early.call]\nanswered = 1.4"),
        encoding="utf-8")
    return {"faster": faster, "broken": broken, "bad_model": bad_model, "folder": folder}


@pytest.fixture(scope="module")
def run_json(drafts: dict[str, Path]) -> tuple[dict[str, Any], Path]:
    chart = drafts["folder"] / "backtest.png"
    result = cli("lab", "run", "--policy", "default", "--policy", str(drafts["faster"]),
                 "--synthetic", str(LOANS), "--seed", "7", "--json", "--chart", str(chart))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), chart


def test_draft_policy_is_a_valid_file(drafts: dict[str, Path]) -> None:
    assert validate_policies([drafts["faster"]]) == []


def test_faster_ladder_contacts_more_and_cures_sooner(
        run_json: tuple[dict[str, Any], Path]) -> None:
    data, _ = run_json
    champion, challenger = (p["figures"] for p in data["policies"])
    assert challenger["contacts"]["value"] > champion["contacts"]["value"]
    assert challenger["median_days_to_cure"]["value"] < champion["median_days_to_cure"]["value"]
    diff = data["differences"][0]["figures"]
    assert diff["contacts"]["low"] > 0  # more contacts, beyond the bootstrap's doubt
    assert diff["median_days_to_cure"]["value"] < 0
    for figures in (champion, challenger):
        assert figures["breaches"]["value"] == 0  # checked by the same rules
        assert figures["cases"]["value"] == LOANS


def test_json_has_every_figure_with_its_interval(run_json: tuple[dict[str, Any], Path],
                                                 drafts: dict[str, Path]) -> None:
    data, _ = run_json
    assert [p["policy"] for p in data["policies"]] == ["default", str(drafts["faster"])]
    assert data["loans"] == LOANS and data["seed"] == 7
    expected = {"recovery_rate", "recovered.CNY", "cure_rate", "median_days_to_cure",
                "roll_rate.pre_due->early", "roll_rate.early->middle", "roll_rate.middle->late",
                "roll_rate.late->legal", "roll_rate.legal->written_off", "promises_made",
                "promises_kept", "promise_kept_rate", "contacts", "contacts.sms",
                "contacts.call", "contacts_per_cure", "contacts_per_cure.sms",
                "compliance_deferrals", "breaches", "legal_actions",
                "legal_actions.lawyer_letter", "legal_actions.filing", "cost.CNY",
                "cost_to_collect"}
    for block in (*data["policies"], *data["differences"]):
        figures = block["figures"]
        assert expected <= set(figures)
        for name, f in figures.items():
            assert {"value", "low", "high"} <= set(f), name
    money = data["policies"][0]["figures"]["recovered.CNY"]
    assert isinstance(money["value"], str) and re.fullmatch(r"\d+\.\d{2}", money["value"])
    assert money["currency"] == "CNY"


def test_chart_file_is_written(run_json: tuple[dict[str, Any], Path],
                               drafts: dict[str, Path]) -> None:
    _, chart = run_json
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = drafts["folder"] / "backtest.svg"
    result = cli("lab", "run", "--policy", "default", "--synthetic", "10", "--chart", str(svg))
    assert result.exit_code == 0, result.output
    assert "<svg" in svg.read_text(encoding="utf-8")[:500]
    assert "policy default" in result.stdout and "breaches: none" in result.stdout


def test_same_seed_same_figures() -> None:
    loans = synthetic_book(40, seed=3)
    model, prices = load_model(MODEL), load_prices()

    def figures(seed: int) -> dict[str, Any]:
        out = backtest_json(run_backtest(["default"], loans, model, seed, prices,
                                         processes=1, replicates=50))
        out.pop("seconds")
        for p in out["policies"]:
            p.pop("seconds")
        return out

    first = figures(11)
    assert figures(11) == first
    assert figures(12)["policies"] != first["policies"]


def test_policy_with_an_error_is_refused_with_the_loaders_message(
        drafts: dict[str, Path]) -> None:
    problem = validate_policies([drafts["broken"]])[0]
    assert "steps out of order" in problem
    result = cli("lab", "run", "--policy", "default", "--policy", str(drafts["broken"]),
                 "--synthetic", "5")
    assert result.exit_code == BAD_INPUT
    assert f"--policy: {problem}" in result.stderr.replace("\n", "")
    unknown = cli("lab", "run", "--policy", "no_such_policy", "--synthetic", "5")
    assert unknown.exit_code == BAD_INPUT
    assert "'no_such_policy' is not a shipped policy" in unknown.stderr


def test_bad_model_file_is_refused_naming_the_field(drafts: dict[str, Path]) -> None:
    result = cli("lab", "run", "--policy", "default", "--synthetic", "5", "--model",
                 str(drafts["bad_model"]))
    assert result.exit_code == BAD_INPUT
    assert "stages.early.call.answered: 1.4 is not a probability" in result.stderr


def test_book_file_and_book_or_synthetic() -> None:
    result = cli("lab", "run", "--policy", "default", "--book", str(ROOT / "examples" /
                                                                    "loans.csv"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["loans"] == 12
    assert {"recovered.CNY", "recovered.USD"} <= set(data["policies"][0]["figures"])
    neither = cli("lab", "run", "--policy", "default")
    assert neither.exit_code == BAD_INPUT and "--synthetic" in neither.stderr
