"""Random books and random borrowers for the strategy lab's checks and benchmarks: loans of
mixed jurisdictions, time zones, amounts, products and due dates, and behaviour models with
random chances, each fixed by a seed."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from bench.common import make_loan
from contracts.behaviour import BehaviourModel, Response
from contracts.channels import CHANNELS
from contracts.messages import STAGE_ORDER, LoanInput

# (timezone, phone prefix, digits after it, currency, jurisdiction, policy)
_PLACES = (
    ("Asia/Shanghai", "+86139", 8, "CNY", "", None),
    ("Asia/Shanghai", "+86138", 8, "CNY", "CN", "default"),
    ("Asia/Urumqi", "+86137", 8, "CNY", "", None),
    ("America/New_York", "+1212777", 4, "USD", "US-NY", "us_default"),
    ("America/Los_Angeles", "+1415777", 4, "USD", "US-CA", "us_default"),
    ("America/Chicago", "+1312777", 4, "USD", "US", None),
)


def random_book(n: int, *, seed: int, today: date, prefix: str = "LAB") -> list[LoanInput]:
    rng = random.Random(seed)
    loans = []
    for i in range(n):
        tz, phone, digits, currency, jurisdiction, policy = rng.choice(_PLACES)
        overdue = Decimal(rng.randrange(5_000, 2_000_000)) / 100
        interest = (overdue * Decimal(rng.choice(["0", "0.05", "0.1"]))).quantize(Decimal("0.01"))
        fees = Decimal(rng.choice(["0", "15.00", "50.00"])).min(overdue - interest)
        loans.append(make_loan(
            f"{prefix}-{seed}-{i:05d}", today + timedelta(days=rng.randint(-40, 10)), i,
            phone=f"{phone}{rng.randrange(10 ** digits):0{digits}d}", timezone=tz,
            currency=currency, amount_overdue=overdue, interest=interest, fees=fees,
            jurisdiction=jurisdiction, policy=policy,
            product=rng.choice(["consumer", "consumer", "installment"]),
            prerecorded_call_consent=rng.random() < 0.5,
            wecom_external_userid=f"wm{i:08d}" if currency == "CNY" and rng.random() < 0.3 else "",
        ))
    return loans


def _chance(rng: random.Random, top: float) -> float:
    return round(rng.uniform(0, top), 3)


def random_response(rng: random.Random) -> Response:
    return Response(
        answered=_chance(rng, 0.9), pays_full=_chance(rng, 0.15), pays_part=_chance(rng, 0.1),
        part_share=round(rng.uniform(0.1, 0.9), 2), promises=_chance(rng, 0.2),
        keeps_promise=_chance(rng, 1.0), asks_plan=_chance(rng, 0.1),
        disputes=_chance(rng, 0.05), opts_out=_chance(rng, 0.05),
        wrong_number=_chance(rng, 0.08), delay_days=rng.randint(0, 6),
        plan_installments=rng.randint(2, 6),
    )


def random_model(seed: int) -> BehaviourModel:
    """A borrower with random chances for every stage and channel."""
    rng = random.Random(seed)
    return BehaviourModel(
        name=f"random-{seed}", version="1", default=random_response(rng),
        by_stage={stage.value: {name: random_response(rng) for name in CHANNELS}
                  for stage in STAGE_ORDER})
