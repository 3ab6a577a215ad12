"""Policy and rule-pack problems as one-line messages, and the error that carries them.

Each message names the file, the place in it (ladder, 1-based step position and id, or segment)
and the problem, so a policy author can fix a file from the message alone; pydantic's validation
errors are turned into such lines here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from contracts.policy import UNKNOWN_CHANNEL

# Plural field names, as a problem message says them ("unknown channel 'fax'").
_SINGULAR = {
    "channels": "channel",
    "payment_order": "payment component",
    "allowed_after_cease": "notice",
    "counts": "count",
}


class PolicyError(ValueError):
    """A policy or rule-pack file is unusable. `problems` holds one line per problem."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


def fail(source: str, problems: Sequence[str]) -> PolicyError:
    lines = [f"{source}: {p}".replace("\n", " ") for p in problems]
    return PolicyError("; ".join(lines), lines)


# --- pydantic errors to one-line messages -------------------------------------------------------


def _path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _where(loc: tuple[Any, ...], data: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """Split a pydantic `loc` into a readable place ("ladder 'x' step 4 'id'") and the rest."""
    if len(loc) >= 3 and loc[0] == "ladders" and isinstance(loc[2], int):
        ladder, index = loc[1], loc[2]
        try:
            step_id = data["ladders"][ladder][index].get("id")
        except (KeyError, IndexError, TypeError, AttributeError):
            step_id = None
        label = f"ladder '{ladder}' step {index + 1}" + (f" '{step_id}'" if step_id else "")
        return label, loc[3:]
    if len(loc) >= 2 and loc[0] == "ladders":
        return f"ladder '{loc[1]}'", loc[2:]
    if len(loc) >= 2 and loc[0] == "segments" and isinstance(loc[1], int):
        try:
            name = data["segments"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        return f"segment {loc[1] + 1}" + (f" '{name}'" if name else ""), loc[2:]
    return "", loc


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_error(err: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    place, rest = _where(tuple(err["loc"]), data)
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    fields = [p for p in rest if isinstance(p, str)]
    field = fields[-1] if fields else ""
    if kind in ("literal_error", "enum", UNKNOWN_CHANNEL):
        allowed = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        noun = _SINGULAR.get(field, field.replace("_", " ") or "value")
        # The field is named by the problem itself; keep only the part of the path before it.
        cut = len(rest) - 1 - rest[::-1].index(field) if field else len(rest)
        rest, problem = rest[:cut], f"unknown {noun} {short_repr(value)} (allowed: {allowed})"
    elif kind in ("missing", "extra_forbidden"):
        rest = rest[:-1]
        what = "missing required field" if kind == "missing" else "unknown field"
        problem = f"{what} '{field}'"
    elif kind == "greater_than" and ctx.get("gt") == 0 and isinstance(value, int):
        problem = f"must be a positive integer, got {short_repr(value)}"
    elif kind == "greater_than":
        problem = f"must be greater than {ctx.get('gt')}, got {short_repr(value)}"
    elif kind == "greater_than_equal":
        problem = f"must be at least {ctx.get('ge')}, got {short_repr(value)}"
    elif kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        problem = f"must be at most {bound}, got {short_repr(value)}"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
        problem = message if kind == "value_error" else f"{message}, got {short_repr(value)}"
    parts = [p for p in (place, _path(rest)) if p]
    return ": ".join([*parts, problem])


def validation_problems(error: ValidationError, data: Mapping[str, Any]) -> list[str]:
    return [_describe_error(e, data) for e in error.errors()]

