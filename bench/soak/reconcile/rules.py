"""The rule packs' windows and caps and the policy's ladder steps, read from their TOML files as
data (none of the code that applies them is imported)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import time
from pathlib import Path

from bench.soak.reconcile.inputs import VALIDATION_NOTICE

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "policies" / "rules"


@dataclass(frozen=True)
class Cap:
    id: str
    channels: frozenset[str]
    counts: str
    scope: str  # borrower, contact, debt
    limit: int
    period_days: int
    per_channel: bool = False


@dataclass(frozen=True)
class RulePack:
    name: str
    window_start: time
    window_end: time
    window_rule: str
    caps: tuple[Cap, ...] = ()
    post_conversation_quiet_days: int = 0


def ladder_steps(policy: Path) -> frozenset[str]:
    """The ids of a policy's ladder steps (read as data), and the validation notice: contacts
    whose row is written when the case decides them."""
    raw = tomllib.loads(policy.read_text())
    return frozenset({VALIDATION_NOTICE} | {step["id"] for ladder in raw["ladders"].values()
                                            for step in ladder})


def load_rule_packs(folder: Path = RULES_DIR) -> dict[str, RulePack]:
    """The rule packs' windows and caps, read from their TOML files as data."""
    packs = {}
    for path in sorted(folder.glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        caps = tuple(Cap(c["id"], frozenset(c["channels"]), c["counts"], c["scope"],
                         int(c["limit"]), int(c["period_days"]), bool(c.get("per_channel")))
                     for c in raw.get("caps", []))
        packs[raw["name"]] = RulePack(raw["name"], raw["window_start"], raw["window_end"],
                                      raw.get("window_rule", f"{raw['name']}.window"), caps,
                                      int(raw.get("post_conversation_quiet_days", 0)))
    return packs
