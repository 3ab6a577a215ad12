"""A synthetic book of loans for backtests: `synthetic_book(10_000, seed=7)`.

Seeded: the same `n` and `seed` give the same loans. Borrowers are Chinese consumer-finance
customers (the shipped `default` policy and `cn` rule pack apply), with balances spread like a
consumer book (log-normal, most between 500 and 20,000 CNY), a mix of products and risk grades
that the default policy's segments tell apart, and due dates over the first weeks after `anchor`,
so every case starts before its due date and the whole ladder plays. No name, phone or e-mail is
a real person's: phones are in a block of their own and e-mail goes to example.com.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Final

from contracts.messages import LoanInput

ANCHOR: Final = date(2026, 1, 5)  # a Monday; the lab starts its cases on this day by default
PREFIX: Final = "LAB-"
_PRODUCTS: Final = (("consumer", 0.6), ("installment", 0.3), ("credit_card", 0.1))
_GRADES: Final = (("A", 0.2), ("B", 0.45), ("C", 0.25), ("D", 0.1))


def synthetic_book(n: int, *, seed: int = 7, anchor: date = ANCHOR) -> list[LoanInput]:
    if n < 1:
        raise ValueError("a synthetic book has at least one loan")
    rng = random.Random(f"lab-book/{seed}")
    return [_loan(rng, i, anchor) for i in range(n)]


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def _loan(rng: random.Random, i: int, anchor: date) -> LoanInput:
    cents = min(max(int(math.exp(rng.gauss(8.0, 0.9)) * 100), 20_000), 20_000_000)
    amount = Decimal(cents).scaleb(-2)
    interest = (amount * Decimal("0.06")).quantize(Decimal("0.01"))
    fees = Decimal("50.00") if amount > 1000 else Decimal("0.00")
    loan_id = f"{PREFIX}{i:06d}"
    return LoanInput(
        loan_id=loan_id, borrower_name=f"Lab Borrower {i}",
        phone=f"+86139{i % 100_000_000:08d}", email=f"{loan_id.lower()}@example.com",
        locale="zh-CN" if rng.random() < 0.8 else "en", timezone="Asia/Shanghai",
        currency="CNY", amount_overdue=amount, interest=interest, fees=fees,
        due_date=anchor + timedelta(days=rng.randint(4, 24)),
        product=_pick(rng, _PRODUCTS), risk_grade=_pick(rng, _GRADES),
        borrower_id=f"LAB-B{i:06d}")
