"""Reading policy files: the one place a loan's policy is looked up, once, when its case opens.

The result is recorded in the workflow's history, which is what pins the policy: editing a file
later changes new loans only.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.templates import known_templates
from workflows import policy_loader
from workflows.activity_io import RESOLVE_POLICY
from workflows.messages import LoanInput
from workflows.policy import ResolvedPolicy


def resolve(loan: LoanInput) -> ResolvedPolicy:
    rule_packs = policy_loader.load_rule_packs()
    policies = policy_loader.load_policies(rule_packs=rule_packs, templates=known_templates())
    return policy_loader.resolve_policy(loan, policies=policies, rule_packs=rule_packs)


@activity.defn(name=RESOLVE_POLICY)
async def resolve_policy(loan: LoanInput) -> ResolvedPolicy:
    try:
        return resolve(loan)
    except (policy_loader.PolicyError, LookupError) as err:
        # A broken or missing policy will not fix itself on retry.
        raise ApplicationError(str(err), type="PolicyError", non_retryable=True) from None
