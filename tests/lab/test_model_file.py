"""Behaviour-model files: the shipped default loads, a model written loads back the same, and
every bad file is refused with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.behaviour import MODEL_FORMAT, BehaviourModel, Response
from lab.model_file import ModelFileError, load_model, parse_model, write_model

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "lab" / "models" / "default.toml"

GOOD = """
format = 1
name = "t"
version = "1"
[default]
answered = 0.5
[stages.early.sms]
answered = 0.4
pays_full = 0.1
"""


def test_default_model_loads_with_every_stage_it_names() -> None:
    model = load_model(DEFAULT)
    assert model.format == MODEL_FORMAT and model.name == "default"
    assert {"pre_due", "early", "middle", "late", "legal"} <= set(model.by_stage)
    call, sms = model.response("early", "call"), model.response("early", "sms")
    assert call.promises > sms.promises  # a call talks; a text is easily ignored
    # Cure odds fall stage by stage.
    assert model.response("early", "sms").pays_full > model.response("late", "sms").pays_full
    assert model.response("written_off", "sms") == model.default


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_written_model_loads_back_equal(tmp_path: Path, suffix: str) -> None:
    model = BehaviourModel(name="fitted", version="fit-2026-12-01", default=Response(answered=0.3),
                           by_stage={"middle": {"call": Response(
                               answered=0.25, pays_full=0.125, promises=0.2, keeps_promise=0.4,
                               delay_days=3, plan_installments=4)}})
    path = tmp_path / f"model{suffix}"
    write_model(model, path, header="a test\nsecond line")
    assert load_model(path) == model


@pytest.mark.parametrize(("text", "field", "problem"), [
    (GOOD.replace("answered = 0.4", "answered = 1.2"), "stages.early.sms.answered",
     "is not a probability"),
    (GOOD.replace("answered = 0.5", "answered = -0.1"), "default.answered", "is not a probability"),
    (GOOD.replace("pays_full = 0.1", "pays_full = 0.6\npromises = 0.5"), "stages.early.sms",
     "must sum to at most 1"),
    (GOOD.replace("[stages.early.sms]", "[stages.eraly.sms]"), "stages.eraly",
     "unknown stage"),
    (GOOD.replace("[stages.early.sms]", "[stages.early.fax]"), "stages.early.fax",
     "unknown channel"),
    (GOOD.replace("pays_full = 0.1", "pays_ful = 0.1"), "stages.early.sms.pays_ful",
     "unknown field"),
    (GOOD.replace("format = 1", "format = 99"), "format", "not a model format"),
    (GOOD.replace('name = "t"', ""), "name", "is required"),
    (GOOD.replace("pays_full = 0.1", "delay_days = 1.5"), "stages.early.sms.delay_days",
     "not a whole number"),
    (GOOD.replace("pays_full = 0.1", 'pays_full = "a lot"'), "stages.early.sms.pays_full",
     "is not a number"),
    (GOOD.replace("pays_full = 0.1", "part_share = 0"), "stages.early.sms.part_share",
     "must be above 0"),
    ("extra = 1\n" + GOOD, "extra", "unknown field"),
])
def test_bad_model_names_the_field(text: str, field: str, problem: str) -> None:
    with pytest.raises(ModelFileError) as caught:
        parse_model(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml: {field}: "), message
    assert problem in message and "\n" not in message


def test_bad_syntax_and_missing_file_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"^m\.json: JSON syntax error"):
        parse_model("{not json", "m.json", as_json=True)
    with pytest.raises(ModelFileError, match="TOML syntax error"):
        parse_model("format = = 1", "m.toml")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "absent.toml")
