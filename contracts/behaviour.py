"""A borrower-behaviour model: how borrowers answer contacts, per stage and channel, as data.

The strategy lab (lab/) and a case played in behaviour mode draw from the same model with the
same keyed draws (workflows/behaviour.py), so both see the same borrower. A model is loaded from
a versioned TOML or JSON file (lab/model_file.py) or estimated from recorded history (`lab fit`);
it travels in a case's start input as plain JSON, so it is made of dataclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

MODEL_FORMAT = 1  # the file format's version; a model file names the one it was written for


@dataclass(frozen=True)
class Response:
    """What one contact on one channel at one stage leads to. `answered` is the chance the
    contact reaches the borrower (a message read, a call answered); the others are chances
    given an answered contact and are exclusive of one another, so their sum is at most 1;
    what is left is "nothing happens". `keeps_promise` is the chance a promise is paid in full
    by its date; `part_share` the share of the balance a part payment pays."""

    answered: float = 0.0
    pays_full: float = 0.0
    pays_part: float = 0.0
    part_share: float = 0.5
    promises: float = 0.0
    keeps_promise: float = 0.0
    asks_plan: float = 0.0
    disputes: float = 0.0
    opts_out: float = 0.0
    wrong_number: float = 0.0  # drawn before `answered`: the address reaches someone else
    # Days from the contact to the borrower's action (a payment, a promise's date).
    delay_days: int = 1
    # A plan the borrower asks for: this many monthly installments, the first `delay_days` after
    # the contact; each is paid with the chance `keeps_promise` (the first one missed ends them).
    plan_installments: int = 3

    def exclusive_total(self) -> float:
        return (self.pays_full + self.pays_part + self.promises + self.asks_plan
                + self.disputes + self.opts_out)


@dataclass(frozen=True)
class BehaviourModel:
    """Responses by stage (contracts.messages.Stage values) and channel (contracts/channels.py
    names); a stage or channel not listed falls back to `default`."""

    name: str
    version: str
    default: Response = field(default_factory=Response)
    by_stage: dict[str, dict[str, Response]] = field(default_factory=dict)
    format: int = MODEL_FORMAT

    def response(self, stage: str, channel: str) -> Response:
        return self.by_stage.get(stage, {}).get(channel, self.default)


@dataclass
class BorrowerAction:
    """Something a simulated borrower does at a drawn time (workflows/behaviour.py), queued in the
    case's state and applied by the case when the time comes, as the handlers would apply it.

    kinds: `payment` (`share` of the balance then, or `amount`), `promise` (the balance, by `on`;
    `keeps`: paid by then), `plan` (`count` installments of the balance, the first due `on`),
    `dispute` (a dispute hold), `opt_out` (STOP: contact ceases), `task_outcome` (an agent's call
    or visit on `key` with `outcome`, then `then`'s reaction if reached)."""

    at: datetime
    kind: str
    key: str
    share: Decimal | None = None
    amount: Decimal | None = None
    on: date | None = None
    keeps: bool = False
    count: int = 0
    kept: int = 0  # of a plan's installments, how many are paid (each on its due date)
    outcome: str | None = None
    then: str | None = None
    stage: str | None = None  # of the contact a task's outcome reacts to, drawn at `created`
    created: datetime | None = None
