"""A backtest for the cluster (`collect lab run --on-temporal`): the run's input, checked as a
one-machine run checks it (lab/backtest.py) before anything starts, with the book as a reference
the workers can follow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from contracts.behaviour import BehaviourModel
from contracts.lab_run import MAX_INLINE_LOANS, SHARD_SIZE, BookRef, LabRunInput
from contracts.messages import LoanInput
from lab.backtest import checked_sources, default_start
from lab.engine import HORIZON_DAYS
from lab.intervals import REPLICATES
from lab.merge import prices_to_wire
from lab.prices import Prices
from lab.shard import file_digest


def book_ref(loans: Sequence[LoanInput], *, book: Path | None = None,
             synthetic_seed: int | None = None) -> BookRef:
    """How the workers find the loans: a synthetic book by its size and seed; a loan file inline
    when small, else by its path (which every worker must be able to read) and digest."""
    if synthetic_seed is not None:
        return BookRef(kind="synthetic", size=len(loans), synthetic_seed=synthetic_seed)
    if book is None or len(loans) <= MAX_INLINE_LOANS:
        return BookRef(kind="inline", size=len(loans), loans=list(loans))
    return BookRef(kind="file", size=len(loans), path=str(book.resolve()),
                   digest=file_digest(book))


def cluster_input(specs: Sequence[str], loans: Sequence[LoanInput], book: BookRef,
                  model: BehaviourModel, seed: int, prices: dict[str, Prices], *,
                  start: datetime | None = None, horizon_days: int = HORIZON_DAYS,
                  replicates: int = REPLICATES, shard_size: int = SHARD_SIZE) -> LabRunInput:
    sources = checked_sources(specs, loans, prices)
    # A policy file by its absolute path: the workers do not run in this directory.
    policies = [str(s.resolve()) if isinstance(s, Path) else s for s in sources]
    return LabRunInput(book=book, policies=policies, model=model, seed=seed,
                       start=start or default_start(loans), horizon_days=horizon_days,
                       prices=prices_to_wire({c: prices[c] for c in sorted(
                           {loan.currency for loan in loans})}),
                       replicates=replicates, shard_size=shard_size, labels=list(specs))
