"""Checking a parsed policy against what pydantic cannot see.

References between parts of the file (segments to ladders, step order, the final write_off), and
to the outside: the template catalogue, the rule packs, jurisdiction codes and the other policies
its challengers name. Each check returns one-line problems (see `problems`); nothing here reads a
file. The template catalogue (template name -> channels it exists for) is passed in by the caller.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from contracts.channels import EMAIL
from contracts.policy import PolicyFile, RulePack, Step
from policies import experiments, jurisdiction
from policies.problems import short_repr

Templates = Mapping[str, frozenset[str]]


def canonical(code: str) -> bool:
    try:
        return jurisdiction.normalise(code) == code
    except jurisdiction.JurisdictionError:
        return False


def jurisdiction_problems(codes: Iterable[str]) -> list[str]:
    return [
        f"jurisdictions: {short_repr(code)} is not an upper-case ISO 3166 country or subdivision "
        "code (e.g. US or US-NY)"
        for code in codes
        if not canonical(code)
    ]


def _template_problems(template: str, channels: Iterable[str], templates: Templates) -> list[str]:
    if template not in templates:
        close = difflib.get_close_matches(template, list(templates), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [f"unknown template '{template}'{hint}"]
    have = templates[template]
    return [
        f"template '{template}' has no {ch} version (it has: {', '.join(sorted(have)) or 'none'})"
        for ch in channels
        if ch not in have
    ]


def check_policy(
    policy: PolicyFile, rule_packs: Mapping[str, RulePack], templates: Templates | None
) -> list[str]:
    """Consistency pydantic cannot see: references between parts of the file and the outside."""
    problems: list[str] = []
    if policy.rule_pack not in rule_packs:
        known = ", ".join(sorted(rule_packs)) or "none"
        problems.append(f"rule_pack '{policy.rule_pack}' is not a known rule pack (known: {known})")
    problems += jurisdiction_problems(policy.jurisdictions)
    codes = [code for code in policy.jurisdictions if canonical(code)]
    for code in codes:
        if not any(jurisdiction.covers(p.jurisdictions, code) for p in rule_packs.values()):
            problems.append(f"jurisdictions: no rule pack covers {code}, so no loan could start")
    own = rule_packs.get(policy.rule_pack)
    if own is not None and codes and not any(
        jurisdiction.covers(own.jurisdictions, code) for code in codes
    ):
        problems.append(
            f"rule_pack '{policy.rule_pack}' covers none of the policy's jurisdictions "
            f"({', '.join(policy.jurisdictions)})"
        )
    problems += _challenger_problems(policy)
    if not policy.segments:
        problems.append("at least one [[segments]] entry is required")
    if not policy.ladders:
        problems.append("at least one ladder ([[ladders.<name>]]) is required")
    seen_segments: set[str] = set()
    for i, segment in enumerate(policy.segments, start=1):
        where = f"segment {i} '{segment.name}'"
        if segment.name in seen_segments:
            problems.append(f"{where}: duplicate segment name")
        seen_segments.add(segment.name)
        if segment.ladder not in policy.ladders:
            known = ", ".join(sorted(policy.ladders)) or "none"
            problems.append(f"{where}: ladder '{segment.ladder}' does not exist (ladders: {known})")
        if (
            segment.min_amount is not None
            and segment.max_amount is not None
            and segment.min_amount >= segment.max_amount
        ):
            problems.append(f"{where}: min_amount must be below max_amount")
    for name, steps in policy.ladders.items():
        if not steps:
            problems.append(f"ladder '{name}' has no steps")
            continue
        first_position: dict[str, int] = {}
        for position, step in enumerate(steps, start=1):
            where = f"ladder '{name}' step {position} '{step.id}'"
            if step.id in first_position:
                problems.append(
                    f"{where}: duplicate step id '{step.id}' (also step {first_position[step.id]})"
                )
            first_position.setdefault(step.id, position)
            if position > 1 and step.day < steps[position - 2].day:
                previous = steps[position - 2].day
                problems.append(
                    f"{where}: steps out of order: day {step.day} comes after day {previous}"
                )
            problems += [f"{where}: {p}" for p in _check_step(step, templates)]
            if step.kind == "write_off" and position != len(steps):
                problems.append(f"{where}: write_off must be the last step of the ladder")
        if steps[-1].kind != "write_off":
            problems.append(
                f"ladder '{name}' step {len(steps)} '{steps[-1].id}': the ladder must end with "
                "a write_off step"
            )
    return problems


# An experiment's name goes into a search attribute and a `list --arm` filter, as policy names do.
_EXPERIMENT_RE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)


def _challenger_problems(policy: PolicyFile) -> list[str]:
    """What one file can say about its challengers: names, shares, the experiment's name."""
    if not policy.challengers:
        return []
    problems: list[str] = []
    if not policy.experiment:
        problems.append("experiment: name the experiment the challengers run in "
                        '(e.g. experiment = "fast-ladder-2026q3"); the name keys the assignment')
    elif not _EXPERIMENT_RE.fullmatch(policy.experiment):
        problems.append(f"experiment: {short_repr(policy.experiment)} must be 1-64 letters, digits "
                        "or . _ -")
    seen: set[str] = set()
    for i, c in enumerate(policy.challengers, start=1):
        where = f"challenger {i} '{c.policy}'"
        if not 0 < c.share < 1:
            problems.append(f"{where}: share must lie between 0 and 1 (exclusive), got {c.share}")
        if c.policy == policy.name:
            problems.append(f"{where}: a policy cannot challenge itself")
        if c.policy == experiments.CHAMPION:
            problems.append(f"{where}: '{experiments.CHAMPION}' names the champion's arm; "
                            "rename the challenger policy")
        if c.policy in seen:
            problems.append(f"{where}: named twice")
        seen.add(c.policy)
    total = sum(c.share for c in policy.challengers)
    if total >= 1 and all(0 < c.share < 1 for c in policy.challengers):
        problems.append(f"challenger shares add up to {total:g}: they must leave the champion "
                        "some loans (a sum below 1)")
    return problems


def challenger_references(policy: PolicyFile, known: Mapping[str, PolicyFile]) -> list[str]:
    """What needs the other policies: each challenger exists, runs no experiment of its own, and
    takes every loan the champion does (or a share of the champion's loans would fail to start)."""
    problems: list[str] = []
    for i, c in enumerate(policy.challengers, start=1):
        where = f"challenger {i} '{c.policy}'"
        other = known.get(c.policy)
        if other is None:
            names = ", ".join(sorted(n for n in known if n != policy.name)) or "none"
            problems.append(f"{where}: no policy named '{c.policy}' (known: {names})")
            continue
        if other.challengers:
            problems.append(f"{where}: has challengers of its own; an experiment is one level")
        if other.jurisdictions and not _covers_all(other, policy):
            mine = ", ".join(policy.jurisdictions) or "any jurisdiction"
            problems.append(f"{where}: takes only {', '.join(other.jurisdictions)}, the champion "
                            f"takes {mine}")
    return problems


def _covers_all(challenger: PolicyFile, champion: PolicyFile) -> bool:
    if not champion.jurisdictions:
        return False
    return all(jurisdiction.covers(challenger.jurisdictions, code)
               for code in champion.jurisdictions if canonical(code))


def _check_step(step: Step, templates: Templates | None) -> list[str]:
    problems: list[str] = []
    if step.kind == "message":
        if not step.channels:
            problems.append("message steps need at least one channel")
        if not step.template:
            problems.append("message steps need a template")
    elif step.kind in ("legal", "write_off"):
        if step.kind == "legal" and step.action is None:
            problems.append("legal steps need an action (lawyer_letter, filing, agency_placement)")
        if not step.template:
            problems.append(f"{step.kind} steps need an email template")
        if step.channels not in ([], [EMAIL.name]):
            problems.append(f"{step.kind} steps are sent by email only")
    elif step.channels:
        problems.append(f"{step.kind} steps take no channels")
    if step.action is not None and step.kind != "legal":
        problems.append("only legal steps take an action")
    if (
        step.min_outstanding is not None
        and step.max_outstanding is not None
        and step.min_outstanding >= step.max_outstanding
    ):
        problems.append("min_outstanding must be below max_outstanding")
    if templates is not None and step.template and step.kind in ("message", "legal", "write_off"):
        channels = step.channels if step.kind == "message" else [EMAIL.name]
        problems += _template_problems(step.template, channels, templates)
    return problems

