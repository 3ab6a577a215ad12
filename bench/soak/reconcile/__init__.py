"""The soak's independent reconciler: what the provider received, what PostgreSQL recorded and what
Temporal holds, compared with what the soak itself reported (its run log).

Written apart from the code it checks: it imports nothing of `workflows/`, `activities/` or
`service/`. It reads the emulator's message log over its control API (httpx), PostgreSQL with
plain SQL (asyncpg) and Temporal through the client's list and describe calls, and it reads the
rule packs' TOML files as data, applying the windows and caps with code of its own.

The checks are pure functions over small dataclasses (`tests/test_soak_reconcile.py` feeds them
hand-made inputs); `gather` fills those from the running services and `report` prints them.

    python -m bench.soak.reconcile --state .state/soak     # against a soak's stack still running

The modules: `inputs` (what is read, as dataclasses, and the shared constants), `rules` (the rule
packs and ladder steps read as data), `sources` (reading the emulator, PostgreSQL, Temporal and the
run log), one per check (`messages`, `payments`, `cases`, `outcomes`, `contacts`),
`reconciliation` (all of them over one picture), `report` (printing) and `cli`.
"""

from bench.soak.reconcile.cases import CaseFigures, check_cases
from bench.soak.reconcile.cli import main
from bench.soak.reconcile.contacts import ComplianceFigures, check_compliance, in_window
from bench.soak.reconcile.inputs import (
    CENT,
    COUNTS,
    DAY,
    END_STATES,
    MADE,
    MESSAGE_CHANNELS,
    PHONE_CHANNELS,
    REFUSALS,
    VALIDATION_NOTICE,
    WORKFLOW_PREFIX,
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
from bench.soak.reconcile.messages import MessageFigures, body_hash, check_messages
from bench.soak.reconcile.outcomes import check_outcomes
from bench.soak.reconcile.payments import PaymentFigures, check_payments
from bench.soak.reconcile.reconciliation import Reconciliation, reconcile
from bench.soak.reconcile.report import report, summary
from bench.soak.reconcile.rules import ROOT, RULES_DIR, Cap, RulePack, ladder_steps, load_rule_packs
from bench.soak.reconcile.sources import (
    RunLog,
    database_rows,
    gather,
    provider_log,
    provider_stats,
    temporal_facts,
)

__all__ = [
    "CENT", "COUNTS", "DAY", "END_STATES", "MADE", "MESSAGE_CHANNELS", "PHONE_CHANNELS",
    "REFUSALS", "ROOT", "RULES_DIR", "VALIDATION_NOTICE", "WORKFLOW_PREFIX",
    "Cap", "CaseFigures", "CaseRow", "ComplianceFigures", "ContactRow", "Loan", "MessageFigures",
    "OutboxRow", "PaymentFigures", "PaymentRow", "ProviderMessage", "Reconciliation",
    "ReportedOutcome", "ReportedPayment", "RulePack", "RunLog", "TaskRow", "UnappliedRow",
    "WorkflowFact",
    "body_hash", "check_cases", "check_compliance", "check_messages", "check_outcomes",
    "check_payments", "database_rows", "gather", "in_window", "ladder_steps", "load_rule_packs",
    "main", "provider_log", "provider_stats", "reconcile", "report", "summary", "temporal_facts",
]
