"""A backtest: every loan of a book played under each policy with the same borrower behaviour,
and each policy's figures with intervals, plus each challenger's difference from the first policy.

Policies are named (a shipped policy, `default`) or given as files; a draft file outside
policies/ is read for the run only and never goes live (nothing is started or written). A policy
with a problem is refused before anything runs, with the policy loader's own message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Final

from contracts.behaviour import BehaviourModel
from contracts.messages import CaseResult, LoanInput
from lab.engine import HORIZON_DAYS, resolve_for, run_book
from lab.intervals import REPLICATES, Estimate, difference, summarise
from lab.metrics import Book, book_figures
from lab.prices import Prices
from service.errors import BadInput
from service.policy_catalog import list_policies, validate_policies

# How many days before the book's first due date the cases start: the pre-due reminder plays.
LEAD_DAYS: Final = 5

Runner = Callable[..., list[CaseResult]]  # run_book's signature


@dataclass(frozen=True)
class PolicyRun:
    label: str  # as given on the command line
    policy: str | Path
    book: Book
    estimates: list[Estimate]
    seconds: float


@dataclass(frozen=True)
class Comparison:
    champion: str
    challenger: str
    estimates: list[Estimate]  # challenger minus champion


@dataclass(frozen=True)
class Backtest:
    loans: int
    seed: int
    model: str  # name and version
    start: datetime
    horizon_days: int
    runs: list[PolicyRun]
    comparisons: list[Comparison]
    seconds: float


def policy_source(spec: str) -> str | Path:
    """A shipped policy's name, or a policy file (checked by the loader, refused with its
    message)."""
    path = Path(spec)
    if spec.endswith((".toml", ".TOML")) or path.is_file() or "/" in spec:
        if not path.is_file():
            raise BadInput("--policy", f"{spec}: no such policy file")
        problems = validate_policies([path])
        if problems:
            raise BadInput("--policy", problems[0])
        return path
    names = sorted(p.name for p in list_policies())
    if spec not in names:
        raise BadInput("--policy", f"'{spec}' is not a shipped policy (known: {', '.join(names)}"
                                   "); or give a policy file")
    return spec


def default_start(loans: Sequence[LoanInput]) -> datetime:
    """Midnight UTC, LEAD_DAYS before the book's first due date."""
    first = min(loan.due_date for loan in loans) - timedelta(days=LEAD_DAYS)
    return datetime.combine(first, dtime(0), tzinfo=UTC)


def checked_sources(specs: Sequence[str], loans: Sequence[LoanInput],
                    prices: dict[str, Prices]) -> list[str | Path]:
    """The policies' sources, once the run is known to be possible: at least one policy, each
    loadable for the book's first loan (refused up front with the loader's line), a loan, and
    prices for every currency of the book."""
    if not specs:
        raise BadInput("--policy", "name at least one policy")
    if not loans:
        raise BadInput("book", "has no loans")
    sources = [policy_source(s) for s in specs]
    for spec, source in zip(specs, sources, strict=True):
        try:
            resolve_for(loans[0], source)
        except (ValueError, LookupError) as err:
            raise BadInput("--policy", f"{spec}: {str(err).splitlines()[0]}") from None
    missing = sorted({loan.currency for loan in loans} - set(prices))
    if missing:
        raise BadInput("prices", f"no prices for {', '.join(missing)}")
    return sources


def run_backtest(specs: Sequence[str], loans: Sequence[LoanInput], model: BehaviourModel,
                 seed: int, prices: dict[str, Prices], *, start: datetime | None = None,
                 horizon_days: int = HORIZON_DAYS, processes: int = 2,
                 replicates: int = REPLICATES, runner: Runner = run_book) -> Backtest:
    sources = checked_sources(specs, loans, prices)
    begin = start or default_start(loans)
    clock = time.perf_counter()
    runs = []
    for spec, source in zip(specs, sources, strict=True):
        t0 = time.perf_counter()
        results = runner(loans, source, model, seed, start=begin, horizon_days=horizon_days,
                         processes=processes)
        book = book_figures(zip(loans, results, strict=True), prices)
        runs.append(PolicyRun(spec, source, book,
                              summarise(book, replicates=replicates, seed=seed),
                              time.perf_counter() - t0))
    comparisons = [Comparison(runs[0].label, r.label,
                              difference(runs[0].book, r.book, replicates=replicates, seed=seed))
                   for r in runs[1:]]
    return Backtest(loans=len(loans), seed=seed, model=f"{model.name} {model.version}",
                    start=begin, horizon_days=horizon_days, runs=runs, comparisons=comparisons,
                    seconds=time.perf_counter() - clock)


def estimate_json(e: Estimate) -> dict[str, Any]:
    def plain(v: object) -> object:
        return str(v) if v is not None and e.kind == "money" else v

    out: dict[str, Any] = {"value": plain(e.value), "low": plain(e.low), "high": plain(e.high)}
    if e.currency:
        out["currency"] = e.currency
    return out


def backtest_json(bt: Backtest) -> dict[str, Any]:
    """Every figure of every policy and every difference; money as strings."""
    return {
        "loans": bt.loans, "seed": bt.seed, "model": bt.model, "start": bt.start.isoformat(),
        "horizon_days": bt.horizon_days, "seconds": round(bt.seconds, 3),
        "policies": [{"policy": r.label, "seconds": round(r.seconds, 3),
                      "figures": {e.name: estimate_json(e) for e in r.estimates}}
                     for r in bt.runs],
        "differences": [{"champion": c.champion, "challenger": c.challenger,
                         "figures": {e.name: estimate_json(e) for e in c.estimates}}
                        for c in bt.comparisons],
    }
