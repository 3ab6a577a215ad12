"""A backtest run on Temporal (issue 21, past one machine): what the lab workflow
(workflows/lab_workflow.py), its shard activity (activities/lab_shard.py) and the service
(service/lab_runs.py) pass each other.

Payloads stay small whatever the book: a book is a reference (a loan file every worker can read,
checked by its digest, or a synthetic book by its size and seed), and only a small book travels
inline. A shard's answer is one compact row per case (lab/merge.py reads and writes them), the
figures the metrics need and nothing of the borrower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from contracts.behaviour import BehaviourModel
from contracts.messages import LoanInput

# Loans per shard by default: a shard's rows (about 100 bytes a case) stay far below the payload
# warning (256 KiB), and a lost worker costs little to redo.
SHARD_SIZE: Final = 500
# Books up to this many loans may travel inline, in the workflow's input and the shards'.
MAX_INLINE_LOANS: Final = 500

# The error type of a shard refused for good (a changed book file, a policy a worker cannot
# load): it would fail alike on every attempt, so it is not retried.
SHARD_REFUSED: Final = "LabShardRefused"

BookKind = Literal["file", "synthetic", "inline"]


@dataclass(frozen=True)
class BookRef:
    kind: BookKind
    size: int
    # file: a loan file (CSV or JSON lines) at a path every worker can read, and its sha256, so
    # a worker reading another file than the one the run was started on refuses the shard.
    path: str = ""
    digest: str = ""
    # synthetic: lab/synthetic.py's book of `size` loans from `synthetic_seed`.
    synthetic_seed: int = 0
    # inline: the loans themselves (small books only).
    loans: list[LoanInput] = field(default_factory=list)


@dataclass(frozen=True)
class LabRunInput:
    book: BookRef
    # Shipped policy names or policy files every worker can read; the first is the champion.
    policies: list[str]
    model: BehaviourModel
    seed: int
    start: datetime
    horizon_days: int
    # lab/prices.py's price list, by currency then price name, amounts as decimal strings.
    prices: dict[str, dict[str, str]]
    replicates: int
    shard_size: int = SHARD_SIZE
    # Shards running at once; the rest wait (the cluster's lab workers take them as they free).
    parallel: int = 8
    # The policies as the figures name them (as given on the command line); default: `policies`.
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LabShardInput:
    book: BookRef  # inline: only this shard's loans
    policy: str
    policy_index: int
    shard: int
    first: int  # the shard's loans are the book's [first, stop)
    stop: int
    model: BehaviourModel
    seed: int
    start: datetime
    horizon_days: int
    prices: dict[str, dict[str, str]]


@dataclass(frozen=True)
class LabShardResult:
    policy_index: int
    shard: int
    first: int
    # One row per case in book order (lab/merge.py's layout).
    rows: list[list[Any]]


@dataclass(frozen=True)
class LabFiguresInput:
    run: LabRunInput
    shards: list[LabShardResult]
    seconds: float


@dataclass(frozen=True)
class LabProgress:
    shards_done: int
    shards_total: int
    loans_done: int  # cases played, summed over the policies
    loans_total: int
    finished: bool = False


@dataclass(frozen=True)
class LabRunResult:
    # lab/merge.py's wire form of the backtest: every figure of every policy and difference.
    figures: dict[str, Any]
