"""What a caller sends to start a case: the loan, optionally a pinned policy, and the mode."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.behaviour import BehaviourModel
from contracts.messages import LoanInput
from contracts.policy import ResolvedPolicy


@dataclass
class CollectionInput:
    loan: LoanInput
    # Normally resolved from the policy files by an activity when the case opens; a caller
    # may pin one explicitly (tests, simulations).
    policy: ResolvedPolicy | None = None
    # Run the policy without side effects (workflows/simulation.py): nothing sent or written.
    simulate: bool = False
    # Play the case against a borrower-behaviour model (workflows/behaviour.py): what each contact
    # leads to is drawn, keyed by `seed`, the loan and the moment; with `simulate` nothing is
    # written, without it the records go to PostgreSQL as a real case's do (nothing is sent).
    behaviour: BehaviourModel | None = None
    seed: int = 0


SIMULATION_PREFIX = "simulation-"


def simulation_workflow_id(loan_id: str) -> str:
    """The id a simulated case runs under, on the test server and in the lab alike (it is part of
    the contact and task keys its timeline shows)."""
    return f"{SIMULATION_PREFIX}{loan_id}"
