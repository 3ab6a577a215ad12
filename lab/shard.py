"""What a lab worker does for the lab workflow (the worker injects these into
activities/lab_shard.py): play a shard's loans through the engine and turn each case into its
compact row, and compute the backtest's figures from the merged shards.

A shard finds its loans from the book's reference: a synthetic book is generated again from its
size and seed, a loan file is read (and refused if its digest is not the one the run was started
on: another file would give other figures), an inline book is in the shard's input. Each is read
once per worker process, not once per heartbeat chunk.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from contracts.lab_run import BookRef, LabFiguresInput, LabRunResult, LabShardInput
from contracts.messages import LoanInput
from lab.engine import run_book
from lab.merge import backtest_of, merge, prices_from_wire, to_row, to_wire
from lab.metrics import case_figures
from lab.synthetic import synthetic_book
from service.loan_file import load_loan_file, loans_to_start


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=4)
def _synthetic(size: int, seed: int) -> tuple[LoanInput, ...]:
    return tuple(synthetic_book(size, seed=seed))


@lru_cache(maxsize=4)
def _file(path: str, digest: str) -> tuple[LoanInput, ...]:
    try:
        found = file_digest(path)
    except OSError as exc:
        raise LookupError(f"book {path}: cannot read on this worker: "
                          f"{exc.strerror or exc}") from None
    if found != digest:
        raise ValueError(f"book {path}: not the file the run was started on (sha256 "
                         f"{found[:12]}..., expected {digest[:12]}...)")
    return tuple(loans_to_start(load_loan_file(path), path, skip_invalid=False))


def book_loans(book: BookRef, first: int, stop: int, offset: int = 0) -> list[LoanInput]:
    """The book's loans [first, stop); an inline book holds the loans from `offset` on."""
    if book.kind == "inline":
        return book.loans[first - offset:stop - offset]
    loans = (_synthetic(book.size, book.synthetic_seed) if book.kind == "synthetic"
             else _file(book.path, book.digest))
    if len(loans) != book.size:
        raise ValueError(f"book has {len(loans)} loans, the run was started on {book.size}")
    return list(loans[first:stop])


def play_loans(shard: LabShardInput, first: int, stop: int) -> list[list[Any]]:
    """The rows of the book's loans [first, stop) under the shard's policy."""
    loans = book_loans(shard.book, first, stop, shard.first)
    results = run_book(loans, shard.policy, shard.model, shard.seed, start=shard.start,
                       horizon_days=shard.horizon_days, processes=1)
    prices = prices_from_wire(shard.prices)
    return [to_row(case_figures(loan, result, prices[loan.currency]))
            for loan, result in zip(loans, results, strict=True)]


def figures(merged: LabFiguresInput) -> LabRunResult:
    run = merged.run
    books = merge(merged.shards, len(run.policies), run.book.size)
    bt = backtest_of(run, books, merged.seconds, run.labels or None)
    return LabRunResult(figures=to_wire(bt))
