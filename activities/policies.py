"""Reading policy files: the one place a loan's policy is looked up, once, when its case opens.

The result is recorded in the workflow's history, which is what pins the policy: editing a file
later changes new loans only.
"""

from __future__ import annotations

from functools import lru_cache

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.templates import known_templates
from contracts.activity_io import RESOLVE_POLICY
from contracts.messages import LoanInput
from contracts.policy import PolicyFile, ResolvedPolicy, RulePack
from policies import loader as policy_loader


def _files_signature() -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of every policy and rule file: what the cache keys on."""
    files = sorted([*policy_loader.POLICIES_DIR.glob("*.toml"),
                    *policy_loader.RULES_DIR.glob("*.toml")])
    signature = []
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed between the listing and the stat: the next call sees it gone
        signature.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(signature)


@lru_cache(maxsize=4)
def _load(
    signature: tuple[tuple[str, int, int], ...],
) -> tuple[dict[str, tuple[PolicyFile, str]], dict[str, RulePack]]:
    rule_packs = policy_loader.load_rule_packs()
    policies = policy_loader.load_policies(rule_packs=rule_packs, templates=known_templates())
    return policies, rule_packs


def catalog() -> tuple[dict[str, tuple[PolicyFile, str]], dict[str, RulePack]]:
    """Every shipped policy (with its digest) and rule pack, read again as soon as a file changes.

    Parsing every file for every new case cost more than the rest of opening it; the cache is
    dropped as soon as any file changes, so an edited policy still applies to the next loan.
    Callers must not mutate what it returns: it is shared.
    """
    return _load(_files_signature())


def resolve(loan: LoanInput) -> ResolvedPolicy:
    policies, rule_packs = catalog()
    return policy_loader.resolve_policy(loan, policies=policies, rule_packs=rule_packs)


@activity.defn(name=RESOLVE_POLICY)
async def resolve_policy(loan: LoanInput) -> ResolvedPolicy:
    try:
        return resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        # A broken or missing policy will not fix itself on retry.
        raise ApplicationError(str(err), type="PolicyError", non_retryable=True) from None
