"""The whole: every check run over one picture, and whether it passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.soak.reconcile.cases import CaseFigures, check_cases
from bench.soak.reconcile.contacts import ComplianceFigures, check_compliance
from bench.soak.reconcile.inputs import (
    CaseRow,
    ContactRow,
    Loan,
    OutboxRow,
    PaymentRow,
    ProviderMessage,
    ReportedOutcome,
    ReportedPayment,
    TaskRow,
    UnappliedRow,
    WorkflowFact,
)
from bench.soak.reconcile.messages import MessageFigures, check_messages
from bench.soak.reconcile.outcomes import check_outcomes
from bench.soak.reconcile.payments import PaymentFigures, check_payments
from bench.soak.reconcile.rules import RulePack


@dataclass
class Reconciliation:
    messages: MessageFigures
    payments: PaymentFigures
    cases: CaseFigures
    compliance: ComplianceFigures
    outcomes_reported: int = 0
    outcomes_recorded: int = 0
    outcomes_lost: list[str] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        m, p, c = self.messages, self.payments, self.cases
        return (not m.duplicates and not m.losses and not m.unexplained and not m.stuck_sends
                and p.conserved and not c.stuck and not c.disagree and not self.outcomes_lost
                and self.compliance.breaches == 0)


def reconcile(*, loans: Sequence[Loan], payments: Sequence[ReportedPayment],
              outcomes: Sequence[ReportedOutcome], provider: Sequence[ProviderMessage],
              outbox: Sequence[OutboxRow], contacts: Sequence[ContactRow],
              applied: Sequence[PaymentRow], unapplied: Sequence[UnappliedRow],
              cases: Sequence[CaseRow], tasks: Sequence[TaskRow],
              workflows: Sequence[WorkflowFact], packs: dict[str, RulePack],
              day_seconds: int, faults: dict[str, Any] | None = None,
              decided_steps: frozenset[str] | None = None) -> Reconciliation:
    ended = {w.loan_id for w in workflows if w.status != "running"}
    accepted, recorded, lost = check_outcomes(outcomes, tasks)
    return Reconciliation(
        messages=check_messages(provider, outbox, contacts, ended),
        payments=check_payments(payments, applied, unapplied, cases, workflows),
        cases=check_cases(loans, workflows, cases),
        compliance=check_compliance(contacts, loans, cases, packs, provider, outbox,
                                    day_seconds, decided_steps),
        outcomes_reported=accepted, outcomes_recorded=recorded, outcomes_lost=lost,
        faults=faults or {})
