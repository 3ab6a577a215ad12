"""The strategy lab's engine: the real case code (workflows/case.py, workflows/case_run.py) played
without a server, on a virtual clock (workflows/virtual_loop.py), with the borrower's answers
drawn from a behaviour model (workflows/behaviour.py), in parallel processes.

It decides what the workflow decides: tests/lab/test_equivalence.py plays the same loans through
the real workflow on the time-skipping server and compares the timelines event for event. It lives
in the service layer because it drives workflow code, which the surfaces (lab/, cli/) may not
import; lab/engine.py is its face there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from activities.policies import catalog
from activities.templates import known_templates
from contracts.behaviour import BehaviourModel
from contracts.case_io import simulation_workflow_id
from contracts.messages import CaseResult, LoanInput
from contracts.policy import PolicyFile, ResolvedPolicy, RulePack
from policies import loader as policy_loader
from workflows.case import Case
from workflows.case_run import CaseRun, case_result
from workflows.effects import effects_for
from workflows.virtual_loop import LabRuntime, virtual_loop

HORIZON_DAYS = 180

Catalog = tuple[dict[str, tuple[PolicyFile, str]], dict[str, RulePack], str]


@lru_cache(maxsize=8)
def policy_catalog(policy: str) -> Catalog:
    """The policies a loan can resolve under `policy` (a shipped policy's name, or the path of a
    policy file, a draft outside policies/ included) and the name to resolve it by. Raises the
    loader's PolicyError for a file with an error, or an unknown name."""
    shipped, packs = catalog()
    policies = dict(shipped)
    if policy.endswith(".toml") or Path(policy).is_file():
        draft, digest = policy_loader.load_policy(Path(policy), rule_packs=packs,
                                                  templates=known_templates())
        policies[draft.name] = (draft, digest)
        name = draft.name
    else:
        name = policy
    if name not in policies:
        known = ", ".join(sorted(policies)) or "none"
        raise policy_loader.PolicyError(f"policy '{name}' is not known (known: {known})")
    # A backtest runs the policy itself: its live experiment's challengers are not drawn.
    file, digest = policies[name]
    policies[name] = (file.model_copy(update={"challengers": []}), digest)
    return policies, packs, name


def resolve_for(loan: LoanInput, policy: str | Path) -> ResolvedPolicy:
    """What `loan` pins under `policy` (a shipped policy's name or a policy file)."""
    policies, packs, name = policy_catalog(str(policy))
    return policy_loader.resolve_policy(dataclasses.replace(loan, policy=name),
                                        policies=policies, rule_packs=packs)


def run_case(loan: LoanInput, policy: ResolvedPolicy, model: BehaviourModel, seed: int, *,
             start: datetime, horizon_days: int | None = HORIZON_DAYS,
             workflow_id: str | None = None) -> CaseResult:
    """The loan's case under `policy` from `start`, against `model`'s borrower drawn with `seed`,
    until it closes or `horizon_days` (policy days; None: until it closes) have passed, with its
    timeline. The workflow id defaults to the one a simulation runs under, which the contact and
    task keys in the timeline name."""
    loop = virtual_loop(start)
    runtime = LabRuntime(loop, workflow_id or simulation_workflow_id(loan.loan_id))
    case = Case.open(loan, policy, runtime, simulate=True, behaviour=model, seed=seed)
    until = None
    if horizon_days is not None:
        until = start + case.clock.real_delay(start, start + timedelta(days=horizon_days))
    loop.run(CaseRun(case, effects_for(case.s), runtime.workflow_id).run(), until=until)
    return case_result(case.s)


@dataclasses.dataclass(frozen=True)
class _Chunk:
    loans: list[LoanInput]
    policy: str
    model: BehaviourModel
    seed: int
    start: datetime
    horizon_days: int | None


def _run_chunk(chunk: _Chunk) -> list[CaseResult]:
    return [run_case(loan, resolve_for(loan, chunk.policy), chunk.model, chunk.seed,
                     start=chunk.start, horizon_days=chunk.horizon_days)
            for loan in chunk.loans]


def run_book(loans: Sequence[LoanInput], policy: str | Path, model: BehaviourModel, seed: int, *,
             start: datetime, horizon_days: int | None = HORIZON_DAYS,
             processes: int = 2) -> list[CaseResult]:
    """Every loan's case under `policy`, across `processes` processes; results in the loans'
    order. A policy with an error is refused before any loan runs (the loader's PolicyError)."""
    source = str(policy)
    policy_catalog(source)
    loans = list(loans)
    if processes <= 1 or len(loans) < 2:
        return _run_chunk(_Chunk(loans, source, model, seed, start, horizon_days))
    # A few chunks per process, so a process given slow loans does not hold the others up.
    size = max(1, -(-len(loans) // (processes * 4)))
    chunks = [_Chunk(loans[i:i + size], source, model, seed, start, horizon_days)
              for i in range(0, len(loans), size)]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return [result for part in pool.map(_run_chunk, chunks) for result in part]
