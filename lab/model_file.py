"""Borrower-behaviour model files: read and check one (TOML or JSON), and write one.

A model file is versioned twice: `format` is the file layout this module reads
(contracts.behaviour.MODEL_FORMAT), `version` the model's own (a fitted model names the history it
came from). Every problem is one line naming the file and the field (`stages.early.sms.answered:
1.2 is not a probability (0 to 1)`), so a risk analyst can fix a file from the message alone.

    format = 1
    name = "default"
    version = "2026.12.0"

    [default]            # any stage or channel not listed
    answered = 0.2

    [stages.early.sms]   # contracts.messages.Stage value, contracts/channels.py channel
    answered = 0.35
    pays_full = 0.06
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from contracts.behaviour import MODEL_FORMAT, BehaviourModel, Response
from contracts.channels import CHANNELS
from contracts.messages import Stage
from service.errors import BadInput

# The chances (each 0 to 1); `part_share` is a share of the balance, `delay_days` whole days.
PROBABILITIES: Final = ("answered", "pays_full", "pays_part", "promises", "keeps_promise",
                        "asks_plan", "disputes", "opts_out", "wrong_number")
EXCLUSIVE: Final = ("pays_full", "pays_part", "promises", "asks_plan", "disputes", "opts_out")
RESPONSE_FIELDS: Final = tuple(f.name for f in fields(Response))
TOP_FIELDS: Final = ("format", "name", "version", "description", "default", "stages")
# Whole numbers, with the range each may take.
WHOLE: Final = {"delay_days": (0, 365), "plan_installments": (1, 60)}


class ModelFileError(BadInput):
    """A model file that cannot be used; `str()` is `<file>: <field>: <problem>`."""


def load_model(path: str | Path) -> BehaviourModel:
    """The model in `path` (`.json` is read as JSON, anything else as TOML)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFileError(source, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ModelFileError(source, f"not UTF-8 text: {exc.reason}") from None
    return parse_model(text, source, as_json=Path(path).suffix.lower() == ".json")


def parse_model(text: str, source: str, *, as_json: bool = False) -> BehaviourModel:
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelFileError(source, f"{'JSON' if as_json else 'TOML'} syntax error: "
                                     f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ModelFileError(source, "a model file is a table of fields (format, name, ...)")
    return model_from_dict(data, source)


def _fail(source: str, where: str, problem: str) -> ModelFileError:
    return ModelFileError(source, f"{where}: {problem}")


def model_from_dict(data: dict[str, Any], source: str = "model") -> BehaviourModel:
    for key in data:
        if key not in TOP_FIELDS:
            raise _fail(source, key, f"unknown field (known: {', '.join(TOP_FIELDS)})")
    fmt = data.get("format")
    if fmt != MODEL_FORMAT:
        raise _fail(source, "format", f"{fmt!r} is not a model format this version reads "
                                      f"(expected {MODEL_FORMAT})")
    for key in ("name", "version"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, key, "is required: a non-empty string")
    default = _response(data.get("default", {}), "default", source)
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        raise _fail(source, "stages", "must be a table of stages")
    known_stages = [s.value for s in Stage]
    by_stage: dict[str, dict[str, Response]] = {}
    for stage, channels in stages.items():
        if stage not in known_stages:
            raise _fail(source, f"stages.{stage}",
                        f"unknown stage (known: {', '.join(known_stages)})")
        if not isinstance(channels, dict):
            raise _fail(source, f"stages.{stage}", "must be a table of channels")
        by_stage[stage] = {}
        for channel, values in channels.items():
            where = f"stages.{stage}.{channel}"
            if channel not in CHANNELS:
                raise _fail(source, where,
                            f"unknown channel (known: {', '.join(sorted(CHANNELS))})")
            by_stage[stage][channel] = _response(values, where, source)
    return BehaviourModel(name=data["name"], version=data["version"], default=default,
                          by_stage=by_stage, format=MODEL_FORMAT)


def _response(values: Any, where: str, source: str) -> Response:
    if not isinstance(values, dict):
        raise _fail(source, where, "must be a table of chances")
    for key in values:
        if key not in RESPONSE_FIELDS:
            raise _fail(source, f"{where}.{key}",
                        f"unknown field (known: {', '.join(RESPONSE_FIELDS)})")
    for key in PROBABILITIES:
        if key in values:
            _probability(values[key], f"{where}.{key}", source)
    if "part_share" in values:
        share = _probability(values["part_share"], f"{where}.part_share", source)
        if share == 0:
            raise _fail(source, f"{where}.part_share", "must be above 0 (a part payment pays "
                                                         "something)")
    for key, (low, high) in WHOLE.items():
        if key in values:
            n = values[key]
            if isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high:
                raise _fail(source, f"{where}.{key}",
                            f"{n!r} is not a whole number from {low} to {high}")
    chances = {k: float(values[k]) for k in (*PROBABILITIES, "part_share") if k in values}
    whole = {k: int(values[k]) for k in WHOLE if k in values}
    response = Response(**chances, **whole)  # type: ignore[arg-type]  # names checked above
    total = response.exclusive_total()
    if total > 1 + 1e-9:
        raise _fail(source, where, f"{' + '.join(EXCLUSIVE)} = {total:.4g}: these exclusive "
                                   "chances must sum to at most 1")
    return response


def _probability(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(source, where, f"{value!r} is not a number")
    if not 0 <= value <= 1:
        raise _fail(source, where, f"{value!r} is not a probability (0 to 1)")
    return float(value)


# --- writing ------------------------------------------------------------------------------------


def model_to_dict(model: BehaviourModel, description: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"format": model.format, "name": model.name, "version": model.version}
    if description:
        data["description"] = description
    data["default"] = _response_dict(model.default)
    data["stages"] = {stage: {channel: _response_dict(r) for channel, r in sorted(chs.items())}
                      for stage, chs in model.by_stage.items()}
    return data


def _response_dict(response: Response) -> dict[str, Any]:
    return {name: getattr(response, name) for name in RESPONSE_FIELDS}


def write_model(model: BehaviourModel, path: str | Path, *, description: str = "",
                header: str = "") -> None:
    """Write `model` as TOML (or JSON for a `.json` path); the file loads back to `model`."""
    data = model_to_dict(model, description)
    target = Path(path)
    if target.suffix.lower() == ".json":
        target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return
    target.write_text(to_toml(data, header), encoding="utf-8")


def to_toml(data: dict[str, Any], header: str = "") -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key in ("format", "name", "version", "description"):
        if key in data:
            lines.append(f"{key} = {_toml_value(data[key])}")
    lines += ["", "[default]", *_toml_table(data["default"])]
    for stage, channels in data["stages"].items():
        for channel, values in channels.items():
            lines += ["", f"[stages.{stage}.{channel}]", *_toml_table(values)]
    return "\n".join(lines) + "\n"


def _toml_table(values: dict[str, Any]) -> list[str]:
    return [f"{k} = {_toml_value(v)}" for k, v in values.items()]


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string is JSON's
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)
