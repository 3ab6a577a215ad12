"""Reading and checking policy and rule-pack files.

File I/O lives here, apart from the pure models in `policy.py`: only activities and the CLI call
this module, never workflow code. Errors are one line each and name the file, the step (ladder,
1-based position, id) and the problem (`problems`), so a policy author can fix a file from the
message alone; the checks beyond pydantic's are in `checks`. The template catalogue (template
name -> channels it exists for) is passed in by the caller: this module knows nothing of
`activities/`.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.messages import LoanInput
from contracts.policy import (
    Challenger,
    PolicyFile,
    PolicySettings,
    ResolvedPolicy,
    RulePack,
    select_segment,
)
from policies import experiments, jurisdiction
from policies.checks import Templates as Templates
from policies.checks import challenger_references, check_policy, jurisdiction_problems
from policies.problems import PolicyError as PolicyError
from policies.problems import fail, validation_problems

POLICIES_DIR = Path(__file__).parent
RULES_DIR = Path(__file__).parent / "rules"


def _read(path: Path, source: str | None = None) -> tuple[bytes, str]:
    """The file's bytes (for the digest) and its text; problems name it `source` (its name)."""
    source = source or path.name
    try:
        raw = path.read_bytes()
        return raw, raw.decode("utf-8")
    except OSError as exc:
        raise fail(source, [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise fail(source, [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(source, [f"TOML syntax error: {exc}"]) from None


# --- rule packs ---------------------------------------------------------------------------------


def parse_rule_pack(text: str, source: str) -> RulePack:
    data = _parse_toml(text, source)
    try:
        pack = RulePack.model_validate(data)
    except ValidationError as exc:
        raise fail(source, validation_problems(exc, data)) from None
    ids = [cap.id for cap in pack.caps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    problems = [f"duplicate cap id '{i}'" for i in duplicates]
    problems += jurisdiction_problems(pack.jurisdictions)
    if not pack.jurisdictions:
        # A pack covering nothing would never apply; say so rather than ship it unused.
        problems.append('jurisdictions: list the ISO 3166 codes the pack covers (e.g. ["US"])')
    if problems:
        raise fail(source, problems)
    return pack


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
            raise fail(path.name, [problem])
        packs[pack.name], origin[pack.name] = pack, path.name
    return packs


# --- policies -----------------------------------------------------------------------------------


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
        raise fail(source, validation_problems(exc, data)) from None
    problems = check_policy(policy, rule_packs, templates)
    if problems:
        raise fail(source, problems)
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
            raise fail(path.name, [problem])
        policies[policy.name], origin[policy.name] = (policy, digest), path.name
    files = {name: policy for name, (policy, _) in policies.items()}
    for name, policy in files.items():
        if problems := challenger_references(policy, files):
            raise fail(origin[name], problems)
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
        if problems := challenger_references(policy, known):
            errors += fail(source, problems).problems
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
