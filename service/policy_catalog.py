"""The shipped policies as `policy list` shows them, and checks of policy and rule-pack files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from activities.templates import known_templates
from policies import loader as policy_loader
from service.errors import BadInput


@dataclass(frozen=True)
class PolicySummary:
    name: str
    version: str
    rule_pack: str
    description: str
    segments: list[tuple[str, str]]  # (segment, ladder), in matching order
    steps: dict[str, int]  # ladder -> number of steps


def list_policies() -> list[PolicySummary]:
    try:
        policies = policy_loader.load_policies(templates=known_templates())
    except policy_loader.PolicyError as err:
        raise BadInput("policy", str(err).splitlines()[0]) from None
    return [
        PolicySummary(
            name=p.name, version=p.version, rule_pack=p.rule_pack, description=p.description,
            segments=[(s.name, s.ladder) for s in p.segments],
            steps={ladder: len(steps) for ladder, steps in p.ladders.items()},
        )
        for p, _digest in policies.values()
    ]


def validate_policies(paths: Sequence[Path | str]) -> list[str]:
    """One line per problem in the given policy or rule-pack files (empty when all are good),
    each naming its file as it was given."""
    return policy_loader.validate_files(paths, templates=known_templates(), full_paths=True)
