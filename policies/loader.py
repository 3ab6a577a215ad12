"""Reading and checking policy and rule-pack files.

File I/O lives here, apart from the pure models in `policy.py`: only activities and the CLI call
this module, never workflow code. Errors are one line each and name the file, the step (ladder,
1-based position, id) and the problem, so a policy author can fix a file from the message alone.
The template catalogue (template name -> channels it exists for) is passed in by the caller: this
module knows nothing of `activities/`.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.channels import EMAIL
from contracts.messages import LoanInput
from contracts.policy import (
    UNKNOWN_CHANNEL,
    Challenger,
    PolicyFile,
    PolicySettings,
    ResolvedPolicy,
    RulePack,
    Step,
    select_segment,
)
from policies import experiments, jurisdiction

POLICIES_DIR = Path(__file__).parent
RULES_DIR = Path(__file__).parent / "rules"

Templates = Mapping[str, frozenset[str]]

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


def _fail(source: str, problems: Sequence[str]) -> PolicyError:
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


def _short(value: Any) -> str:
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
        rest, problem = rest[:cut], f"unknown {noun} {_short(value)} (allowed: {allowed})"
    elif kind in ("missing", "extra_forbidden"):
        rest = rest[:-1]
        what = "missing required field" if kind == "missing" else "unknown field"
        problem = f"{what} '{field}'"
    elif kind == "greater_than" and ctx.get("gt") == 0 and isinstance(value, int):
        problem = f"must be a positive integer, got {_short(value)}"
    elif kind == "greater_than":
        problem = f"must be greater than {ctx.get('gt')}, got {_short(value)}"
    elif kind == "greater_than_equal":
        problem = f"must be at least {ctx.get('ge')}, got {_short(value)}"
    elif kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        problem = f"must be at most {bound}, got {_short(value)}"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
        problem = message if kind == "value_error" else f"{message}, got {_short(value)}"
    parts = [p for p in (place, _path(rest)) if p]
    return ": ".join([*parts, problem])


def _validation_problems(error: ValidationError, data: Mapping[str, Any]) -> list[str]:
    return [_describe_error(e, data) for e in error.errors()]


def _read(path: Path, source: str | None = None) -> tuple[bytes, str]:
    """The file's bytes (for the digest) and its text; problems name it `source` (its name)."""
    source = source or path.name
    try:
        raw = path.read_bytes()
        return raw, raw.decode("utf-8")
    except OSError as exc:
        raise _fail(source, [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise _fail(source, [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, [f"TOML syntax error: {exc}"]) from None


# --- rule packs ---------------------------------------------------------------------------------


def parse_rule_pack(text: str, source: str) -> RulePack:
    data = _parse_toml(text, source)
    try:
        pack = RulePack.model_validate(data)
    except ValidationError as exc:
        raise _fail(source, _validation_problems(exc, data)) from None
    ids = [cap.id for cap in pack.caps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    problems = [f"duplicate cap id '{i}'" for i in duplicates]
    problems += _jurisdiction_problems(pack.jurisdictions)
    if not pack.jurisdictions:
        # A pack covering nothing would never apply; say so rather than ship it unused.
        problems.append('jurisdictions: list the ISO 3166 codes the pack covers (e.g. ["US"])')
    if problems:
        raise _fail(source, problems)
    return pack


def _canonical(code: str) -> bool:
    try:
        return jurisdiction.normalise(code) == code
    except jurisdiction.JurisdictionError:
        return False


def _jurisdiction_problems(codes: Iterable[str]) -> list[str]:
    return [
        f"jurisdictions: {_short(code)} is not an upper-case ISO 3166 country or subdivision code "
        "(e.g. US or US-NY)"
        for code in codes
        if not _canonical(code)
    ]


def load_rule_pack(path: Path) -> RulePack:
    path = Path(path)
    return parse_rule_pack(_read(path)[1], path.name)


def load_rule_packs(directory: Path = RULES_DIR) -> dict[str, RulePack]:
    """Every `*.toml` rule pack in `directory`, keyed by the pack's name."""
    packs: dict[str, RulePack] = {}
    origin: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        pack = load_rule_pack(path)
        if pack.name in packs:
            problem = f"rule pack '{pack.name}' is also defined in {origin[pack.name]}"
            raise _fail(path.name, [problem])
        packs[pack.name], origin[pack.name] = pack, path.name
    return packs


# --- policies -----------------------------------------------------------------------------------


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


def _check_policy(
    policy: PolicyFile, rule_packs: Mapping[str, RulePack], templates: Templates | None
) -> list[str]:
    """Consistency pydantic cannot see: references between parts of the file and the outside."""
    problems: list[str] = []
    if policy.rule_pack not in rule_packs:
        known = ", ".join(sorted(rule_packs)) or "none"
        problems.append(f"rule_pack '{policy.rule_pack}' is not a known rule pack (known: {known})")
    problems += _jurisdiction_problems(policy.jurisdictions)
    codes = [code for code in policy.jurisdictions if _canonical(code)]
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
        problems.append(f"experiment: {_short(policy.experiment)} must be 1-64 letters, digits "
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


def _challenger_references(policy: PolicyFile, known: Mapping[str, PolicyFile]) -> list[str]:
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
               for code in champion.jurisdictions if _canonical(code))


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


def parse_policy(
    text: str,
    source: str,
    *,
    rule_packs: Mapping[str, RulePack],
    templates: Templates | None,
) -> PolicyFile:
    """Parse and check one policy file's text; `templates=None` skips the catalogue checks."""
    data = _parse_toml(text, source)
    try:
        policy = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise _fail(source, _validation_problems(exc, data)) from None
    problems = _check_policy(policy, rule_packs, templates)
    if problems:
        raise _fail(source, problems)
    return policy


def load_policy(
    path: Path, *, rule_packs: Mapping[str, RulePack], templates: Templates | None
) -> tuple[PolicyFile, str]:
    """The policy in `path` and the sha256 of its bytes (pinned by workflows, shown in audits)."""
    path = Path(path)
    raw, text = _read(path)
    policy = parse_policy(text, path.name, rule_packs=rule_packs, templates=templates)
    return policy, hashlib.sha256(raw).hexdigest()


def load_policies(
    directory: Path = POLICIES_DIR,
    *,
    rule_packs: Mapping[str, RulePack] | None = None,
    templates: Templates | None = None,
) -> dict[str, tuple[PolicyFile, str]]:
    """Every policy in `directory`, keyed by policy name (not file name)."""
    packs = load_rule_packs() if rule_packs is None else rule_packs
    policies: dict[str, tuple[PolicyFile, str]] = {}
    origin: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        policy, digest = load_policy(path, rule_packs=packs, templates=templates)
        if policy.name in policies:
            problem = f"policy '{policy.name}' is also defined in {origin[policy.name]}"
            raise _fail(path.name, [problem])
        policies[policy.name], origin[policy.name] = (policy, digest), path.name
    files = {name: policy for name, (policy, _) in policies.items()}
    for name, policy in files.items():
        if problems := _challenger_references(policy, files):
            raise _fail(origin[name], problems)
    return policies


def validate_files(paths: Iterable[Path | str], *, templates: Templates | None,
                   full_paths: bool = False) -> list[str]:
    """One message per problem across `paths` (empty when all are good), for the CLI.

    A file with `window_rule` at the top level is checked as a rule pack, anything else as a
    policy; policies may name the shipped rule packs or any rule pack among `paths`. Problems
    name each file by its name, or with `full_paths` as it was given.
    """
    errors: list[str] = []
    packs: dict[str, RulePack] = {}
    try:
        packs.update(load_rule_packs())
    except PolicyError as exc:
        errors += exc.problems
    policies: list[tuple[str, str]] = []
    for item in paths:
        path = Path(item)
        source = str(item) if full_paths else path.name
        try:
            text = _read(path, source)[1]
            if "window_rule" in _parse_toml(text, source):
                pack = parse_rule_pack(text, source)
                packs[pack.name] = pack
            else:
                policies.append((source, text))
        except PolicyError as exc:
            errors += exc.problems
    parsed: list[tuple[str, PolicyFile]] = []
    for source, text in policies:
        try:
            parsed.append((source, parse_policy(text, source, rule_packs=packs,
                                                templates=templates)))
        except PolicyError as exc:
            errors += exc.problems
    # Challengers may be among `paths` (drafts) or shipped; a file given wins over a shipped one.
    known = _shipped_policies(packs)
    known.update({policy.name: policy for _, policy in parsed})
    for source, policy in parsed:
        if problems := _challenger_references(policy, known):
            errors += _fail(source, problems).problems
    return errors


def _shipped_policies(packs: Mapping[str, RulePack]) -> dict[str, PolicyFile]:
    """The shipped policies, each parsed alone; one that does not parse is left out (its own
    problems are reported when it is validated)."""
    found: dict[str, PolicyFile] = {}
    for path in sorted(POLICIES_DIR.glob("*.toml")):
        try:
            policy = parse_policy(_read(path)[1], path.name, rule_packs=packs, templates=None)
        except PolicyError:
            continue
        found.setdefault(policy.name, policy)
    return found


def resolve_policy(
    loan: LoanInput,
    *,
    policies: Mapping[str, tuple[PolicyFile, str]],
    rule_packs: Mapping[str, RulePack],
    default_policy: str = "default",
) -> ResolvedPolicy:
    """The content a loan's workflow pins: its policy's settings, its segment's ladder, its pack.

    The pack is the one for the loan's jurisdiction (`jurisdiction.choose_pack`), which is the
    policy's own `rule_pack` only where that covers the loan. Raises PolicyError for an unknown
    policy or rule pack, `JurisdictionError` (a LookupError) for a loan whose jurisdiction is bad,
    outside the policy or without a pack, and `select_segment`'s LookupError when no segment
    matches the loan.
    """
    name = loan.policy or default_policy
    if name not in policies:
        known = ", ".join(sorted(policies)) or "none"
        raise PolicyError(f"loan {loan.loan_id}: policy '{name}' is not known (known: {known})")
    policy, digest = policies[name]
    experiment, arm = _arm(loan, policy)
    if arm not in (None, experiments.CHAMPION):
        if arm not in policies:
            known = ", ".join(sorted(policies)) or "none"
            raise PolicyError(f"loan {loan.loan_id}: challenger '{arm}' of experiment "
                              f"'{experiment}' is not a known policy (known: {known})")
        name = arm
        policy, digest = policies[name]
    if policy.rule_pack not in rule_packs:
        known = ", ".join(sorted(rule_packs)) or "none"
        raise PolicyError(
            f"policy '{name}': rule_pack '{policy.rule_pack}' is not a known rule pack "
            f"(known: {known})"
        )
    choice = jurisdiction.explain_jurisdiction(loan, policy, rule_packs)
    segment = select_segment(policy, loan.product, loan.risk_grade, loan.amount_overdue)
    settings = PolicySettings.model_validate(
        policy.model_dump(exclude={"segments", "ladders", "experiment", "challengers"})
    )
    return ResolvedPolicy(
        settings=settings,
        segment=segment.name,
        ladder_name=segment.ladder,
        steps=list(policy.ladders[segment.ladder]),
        rule_pack=rule_packs[choice.pack],
        source_sha256=digest,
        experiment=experiment,
        arm=arm,
    )


def _arm(loan: LoanInput, policy: PolicyFile) -> tuple[str | None, str | None]:
    """The experiment the champion `policy` runs and the loan's arm in it; (None, None) if none.
    A loan asking for the champion by name takes part like any other: the experiment decides."""
    challengers: list[Challenger] = policy.challengers
    if not challengers:
        return None, None
    return policy.experiment, experiments.assign(policy.experiment, challengers, loan.loan_id)
