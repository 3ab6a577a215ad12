"""Champion/challenger assignment: which arm of an experiment a loan falls in.

Pure and stable. A loan's place in an experiment is sha256(experiment name, loan id) read as a
number uniform in [0, 1): the same loan gets the same arm on every worker, after any restart and
on any re-run, and two experiments (two names) sort the same loans independently of each other.
Challengers take the low end of [0, 1) in the order the policy lists them, each its share; the
champion keeps the rest. Appending a challenger (or growing the last one) only takes loans from
the champion; no loan moves between the challengers already running.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from contracts.policy import Challenger

CHAMPION: Final = "champion"

_SCALE: Final = float(2**64)


def position(experiment: str, loan_id: str) -> float:
    """The loan's point in [0, 1) for this experiment: the first 8 bytes of
    sha256(f"{experiment}\\x00{loan_id}") over 2**64. The NUL keeps ("a", "b:c") and ("a:b", "c")
    apart."""
    digest = hashlib.sha256(f"{experiment}\x00{loan_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(experiment: str, challengers: Sequence[Challenger], loan_id: str) -> str:
    """The arm of `loan_id`: a challenger's policy name, or `CHAMPION`."""
    point = position(experiment, loan_id)
    upper = 0.0
    for challenger in challengers:
        upper += challenger.share
        if point < upper:
            return challenger.policy
    return CHAMPION

