"""The balance and what payments and waivers do to it. Pure: tested without Temporal."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

ZERO = Decimal("0")
COMPONENTS = ("fees", "interest", "principal")


@dataclass(frozen=True)
class Balance:
    principal: Decimal
    interest: Decimal
    fees: Decimal

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest + self.fees

    def component(self, name: str) -> Decimal:
        if name not in COMPONENTS:
            raise ValueError(f"unknown balance component {name!r}")
        value: Decimal = getattr(self, name)
        return value

    def allocate(self, amount: Decimal,
                 order: list[str]) -> tuple[Balance, dict[str, Decimal], Decimal]:
        """Apply a payment in the policy's order; return the new balance, allocation and excess."""
        remaining = amount
        allocation: dict[str, Decimal] = {}
        balance = self
        for name in order:
            owed = balance.component(name)
            take = min(owed, remaining)
            if take > ZERO:
                allocation[name] = take
                balance = replace(balance, **{name: owed - take})
                remaining -= take
        return balance, allocation, remaining

    def waive(self, component: str, amount: Decimal) -> Balance:
        owed = self.component(component)
        if amount > owed:
            raise ValueError(f"cannot waive {amount} of {component}: only {owed} outstanding")
        return replace(self, **{component: owed - amount})


def balance_of(amount_overdue: Decimal, interest: Decimal, fees: Decimal) -> Balance:
    return Balance(principal=amount_overdue - interest - fees, interest=interest, fees=fees)


def format_amount(amount: Decimal) -> str:
    return f"{amount:,.2f}"
