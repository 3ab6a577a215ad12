"""A backtest played in shards (workflows/lab_workflow.py), put back together: each case's figures
as a compact row (what a shard answers), the shards merged into each policy's book in the loans'
order, and the same figures and intervals a run on one machine gives (lab/backtest.py), in a wire
form that travels as plain JSON and reads back into a `Backtest`. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from contracts.lab_run import LabRunInput, LabShardResult
from lab.backtest import Backtest, Comparison, PolicyRun
from lab.intervals import Estimate, difference, summarise
from lab.metrics import CaseFigures, book_of
from lab.metrics_figures import Kind
from lab.prices import Prices

Row = list[Any]
FIELDS: Final = ("loan_id", "currency", "placed", "recovered", "cured", "days_to_cure", "stages",
                 "promises", "promises_kept", "contacts", "deferrals", "breaches",
                 "legal_actions", "cost")


def to_row(f: CaseFigures) -> Row:
    """One case in FIELDS' order; money as decimal strings, exactly."""
    return [f.loan_id, f.currency, str(f.placed), str(f.recovered), int(f.cured), f.days_to_cure,
            sorted(f.stages), f.promises, f.promises_kept, dict(sorted(f.contacts.items())),
            f.deferrals, f.breaches, dict(sorted(f.legal_actions.items())), str(f.cost)]


def from_row(row: Row) -> CaseFigures:
    if len(row) != len(FIELDS):
        raise ValueError(f"a case row has {len(FIELDS)} fields ({', '.join(FIELDS)}), "
                         f"not {len(row)}")
    (loan_id, currency, placed, recovered, cured, days, stages, promises, kept, contacts,
     deferrals, breaches, legal, cost) = row
    return CaseFigures(
        loan_id=str(loan_id), currency=str(currency), placed=Decimal(placed),
        recovered=Decimal(recovered), cured=bool(cured),
        days_to_cure=None if days is None else int(days), stages=frozenset(stages),
        promises=int(promises), promises_kept=int(kept),
        contacts={str(k): int(v) for k, v in contacts.items()}, deferrals=int(deferrals),
        breaches=int(breaches), legal_actions={str(k): int(v) for k, v in legal.items()},
        cost=Decimal(cost))


def merge(shards: Sequence[LabShardResult], policies: int, size: int) -> list[list[CaseFigures]]:
    """Each policy's cases in the book's order. A shard answered twice (a retry whose first
    answer also arrived) counts once; a gap or an overlap in a policy's shards is an error."""
    books: list[list[CaseFigures]] = []
    for p in range(policies):
        seen: dict[int, LabShardResult] = {}
        for s in shards:
            if s.policy_index == p:
                seen.setdefault(s.shard, s)
        cases: list[CaseFigures] = []
        for s in sorted(seen.values(), key=lambda s: s.first):
            if s.first != len(cases):
                raise ValueError(f"policy {p}: shard {s.shard} starts at loan {s.first}, "
                                 f"expected {len(cases)}")
            cases += [from_row(r) for r in s.rows]
        if len(cases) != size:
            raise ValueError(f"policy {p}: {len(cases)} cases merged of a book of {size}")
        books.append(cases)
    return books


def backtest_of(run: LabRunInput, books: Sequence[Sequence[CaseFigures]], seconds: float,
                labels: Sequence[str] | None = None) -> Backtest:
    """The figures a one-machine run gives (lab/backtest.py `run_backtest`): each policy's with
    its bootstrap interval, and each challenger's difference from the first, same seed."""
    names = list(labels or run.policies)
    built = [book_of(cases) for cases in books]
    runs = [PolicyRun(label, label, book,
                      summarise(book, replicates=run.replicates, seed=run.seed), seconds)
            for label, book in zip(names, built, strict=True)]
    comparisons = [Comparison(runs[0].label, r.label,
                              difference(runs[0].book, r.book, replicates=run.replicates,
                                         seed=run.seed))
                   for r in runs[1:]]
    return Backtest(loans=run.book.size, seed=run.seed,
                    model=f"{run.model.name} {run.model.version}", start=run.start,
                    horizon_days=run.horizon_days, runs=runs, comparisons=comparisons,
                    seconds=seconds)


# --- prices and figures on the wire ------------------------------------------------------------

def prices_to_wire(prices: dict[str, Prices]) -> dict[str, dict[str, str]]:
    return {cur: {k: str(v) for k, v in asdict(p).items()} for cur, p in prices.items()}


def prices_from_wire(data: dict[str, dict[str, str]]) -> dict[str, Prices]:
    return {cur: Prices(**{k: Decimal(v) for k, v in table.items()})
            for cur, table in data.items()}


def _estimate_wire(e: Estimate) -> dict[str, Any]:
    def plain(v: object) -> object:
        return str(v) if isinstance(v, Decimal) else v

    return {"name": e.name, "kind": e.kind, "value": plain(e.value), "low": plain(e.low),
            "high": plain(e.high), "currency": e.currency}


def _estimate(data: dict[str, Any]) -> Estimate:
    kind: Kind = data["kind"]

    def number(v: Any) -> Any:
        if v is None:
            return None
        return Decimal(v) if kind == "money" else v

    return Estimate(data["name"], kind, number(data["value"]), number(data["low"]),
                    number(data["high"]), data.get("currency"))


def to_wire(bt: Backtest) -> dict[str, Any]:
    """The backtest as plain JSON, every estimate with its kind (money as strings), so that
    `from_wire` gives back the same estimates; the per-case columns are left behind."""
    return {
        "loans": bt.loans, "seed": bt.seed, "model": bt.model, "start": bt.start.isoformat(),
        "horizon_days": bt.horizon_days, "seconds": bt.seconds,
        "runs": [{"label": r.label, "seconds": r.seconds,
                  "estimates": [_estimate_wire(e) for e in r.estimates]} for r in bt.runs],
        "comparisons": [{"champion": c.champion, "challenger": c.challenger,
                         "estimates": [_estimate_wire(e) for e in c.estimates]}
                        for c in bt.comparisons],
    }


def from_wire(data: dict[str, Any]) -> Backtest:
    """The backtest `to_wire` wrote; its policies' books are empty (the cases stayed on the
    cluster), which tables, JSON and charts never read."""
    empty = book_of([])
    return Backtest(
        loans=int(data["loans"]), seed=int(data["seed"]), model=str(data["model"]),
        start=datetime.fromisoformat(data["start"]), horizon_days=int(data["horizon_days"]),
        runs=[PolicyRun(r["label"], r["label"], empty, [_estimate(e) for e in r["estimates"]],
                        float(r["seconds"])) for r in data["runs"]],
        comparisons=[Comparison(c["champion"], c["challenger"],
                                [_estimate(e) for e in c["estimates"]])
                     for c in data["comparisons"]],
        seconds=float(data["seconds"]))
