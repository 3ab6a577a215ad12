"""What a caller sends to start a case: the loan, optionally a pinned policy, and the mode."""

from __future__ import annotations

from dataclasses import dataclass

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
