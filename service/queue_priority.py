"""The agents' queue ranked by the amount a call is expected to recover, from a borrower-behaviour
model (contracts/behaviour.py): pure, so the queue listing (CLI, API, console) and the lab's
capacity backtest (lab/agent_capacity.py) rank the same way.

For a call (or visit) at the case's stage, the borrower is reached with the model's `answered`
chance, after a wrong number (drawn first) has not taken the call elsewhere; once reached, the
borrower pays in full, pays a part (`part_share` of the balance) or promises (and the promise is
kept with `keeps_promise`). The other outcomes (a plan asked for, a dispute, STOP) recover nothing
on the call itself. So, per call:

    expected = P(reached) x (pays_full + pays_part x part_share + promises x keeps_promise)
               x outstanding

Amounts of different currencies are compared as numbers: a queue that mixes currencies is ranked
as if they were one (the project holds no exchange rates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, TypeVar

from contracts.behaviour import BehaviourModel, Response
from service.currencies import minor_units
from service.errors import BadInput
from service.values import parse_choice

T = TypeVar("T")

# "due": highest priority, then earliest deadline (the queue as it always was); "expected": the
# largest expected recovery per call first, ties in due order.
BY_DUE: Final = "due"
BY_EXPECTED: Final = "expected"
ORDERS: Final = (BY_DUE, BY_EXPECTED)
NO_MODEL: Final = ("ordering by expected recovery needs a behaviour model: set "
                   "COLLECT_QUEUE_MODEL to a model file (`collect lab fit --out FILE` writes one)")


def _chance(value: float) -> Decimal:
    # The model's chances are floats in a data file; through str() they enter Decimal as written.
    return Decimal(str(value))


def reach_chance(response: Response) -> Decimal:
    """The chance a call reaches the borrower: not a wrong number, then answered."""
    return (1 - _chance(response.wrong_number)) * _chance(response.answered)


def recovery_share(response: Response) -> Decimal:
    """The share of the balance a reached borrower is expected to pay on this call's account."""
    return (_chance(response.pays_full) + _chance(response.pays_part) * _chance(response.part_share)
            + _chance(response.promises) * _chance(response.keeps_promise))


def expected_per_call(model: BehaviourModel, *, channel: str, stage: str, outstanding: Decimal,
                      currency: str) -> Decimal:
    """The amount one `channel` contact ("call" or "visit") at `stage` is expected to recover of
    `outstanding`, rounded to the currency's minor unit."""
    response = model.response(stage, channel)
    figure = reach_chance(response) * recovery_share(response) * max(outstanding, Decimal(0))
    return figure.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


def due_key(priority: int, due_by: datetime) -> tuple[int, datetime]:
    """The queue's order without a model: highest priority, then earliest deadline."""
    return -priority, due_by


def by_due(items: Sequence[T], key: Callable[[T], tuple[int, datetime]]) -> list[T]:
    return sorted(items, key=key)


def by_expected(items: Sequence[T], expected: Callable[[T], Decimal],
                key: Callable[[T], tuple[int, datetime]]) -> list[T]:
    """Largest expected recovery first; equal figures keep the due order (sorting is stable)."""
    return sorted(by_due(items, key), key=lambda item: -expected(item))


def queue_order(order: str | None, model: BehaviourModel | None) -> str:
    """The order to list in: as asked, else by expected recovery when a model is configured and
    by due time when none is; asking for `expected` without a model is bad input."""
    if order is None:
        return BY_EXPECTED if model is not None else BY_DUE
    chosen = parse_choice(order, "order", ORDERS)
    if chosen == BY_EXPECTED and model is None:
        raise BadInput("order", NO_MODEL)
    return chosen
