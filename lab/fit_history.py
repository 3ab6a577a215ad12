"""The recorded history `lab fit` learns from, read from PostgreSQL: every contact made (messages
sent, calls and visits worked) with its stage and what is known of its outcome, and the
borrowers' actions (payments, promises and how they ended, plans, disputes, opt-outs).

Only reads. The tables are the ones every case writes (infra/migrations/001_init.sql): `contacts`
for the contacts (with the stage they were made in), `events` for what followed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg

from contracts.channels import CHANNELS
from contracts.messages import TaskOutcome

# A contact row's outcome when the provider or the agent said whether the borrower was reached.
ANSWERED: Final = "connected"
UNANSWERED: Final = "unanswered"
CONTACT_DECISIONS: Final = ("sent", "breach", "failed")
EVENT_KINDS: Final = ("payment", "promise", "promise_kept", "promise_broken",
                      "promise_cancelled", "plan",
                      "plan_completed", "plan_broken", "hold", "cease", "task_outcome",
                      "installment_paid", "settled", "case_closed")
# A notice the case owed (a receipt, a confirmation, an installment reminder) rather than a step
# of the ladder: keyed by its template and a sequence number, or by the plan's installment.
_PLAN_NOTICE: Final = re.compile(r"plan-\d+-inst\d+")
_PAYMENT: Final = re.compile(
    r"of (-?\d+(?:\.\d+)?) [A-Z]{3} applied.*outstanding (-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Contact:
    loan_id: str
    channel: str
    stage: str
    at: datetime
    answered: bool | None  # None: not observed (a message read or not)
    wrong_number: bool


@dataclass(frozen=True)
class Event:
    loan_id: str
    kind: str
    at: datetime
    summary: str
    detail: dict[str, Any]

    def payment(self) -> tuple[Decimal, Decimal] | None:
        """A payment's amount and the balance left after it."""
        found = _PAYMENT.search(self.summary)
        return (Decimal(found[1]), Decimal(found[2])) if found else None


@dataclass(frozen=True)
class History:
    contacts: list[Contact]
    events: list[Event]  # by loan, then time

    @property
    def cases(self) -> int:
        return len({c.loan_id for c in self.contacts})


def is_notice(step_id: str, template: str | None) -> bool:
    """A notice answers something the borrower did; it is not a contact they answer."""
    if _PLAN_NOTICE.fullmatch(step_id):
        return True
    return template is not None and re.fullmatch(rf"{re.escape(template)}-\d+", step_id) is not None


def _detail(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


async def read_history(pool: asyncpg.Pool, *, since: datetime | None = None,
                       loan_prefix: str | None = None) -> History:
    like = f"{loan_prefix}%" if loan_prefix else "%"
    async with pool.acquire() as conn:
        contact_rows = await conn.fetch(
            """
            SELECT loan_id, channel, stage, decision, outcome, occurred_at, step_id, template
            FROM contacts
            WHERE decision = ANY($1::text[]) AND loan_id LIKE $2
              AND ($3::timestamptz IS NULL OR occurred_at >= $3)
            ORDER BY loan_id, occurred_at, id
            """, list(CONTACT_DECISIONS), like, since)
        event_rows = await conn.fetch(
            """
            SELECT loan_id, kind, summary, detail, occurred_at FROM events
            WHERE kind = ANY($1::text[]) AND loan_id LIKE $2
              AND ($3::timestamptz IS NULL OR occurred_at >= $3)
            ORDER BY loan_id, occurred_at, id
            """, list(EVENT_KINDS), like, since)
    events = [Event(r["loan_id"], r["kind"], r["occurred_at"], r["summary"], _detail(r["detail"]))
              for r in event_rows]
    # An agent's call or visit: the task's outcome says whether it was a wrong number.
    wrong_calls = {(e.loan_id, e.detail.get("at")) for e in events
                   if e.kind == "task_outcome"
                   and e.detail.get("outcome") == TaskOutcome.WRONG_NUMBER.value}
    contacts = []
    for r in contact_rows:
        channel, outcome = r["channel"], r["outcome"]
        if channel not in CHANNELS or is_notice(r["step_id"], r["template"]):
            continue
        agent = CHANNELS[channel].kind == "agent"
        wrong = (r["decision"] == "failed" and not agent) or \
            (agent and (r["loan_id"], r["occurred_at"].isoformat()) in wrong_calls)
        answered = None
        if outcome in (ANSWERED, UNANSWERED) and not wrong:
            answered = outcome == ANSWERED
        contacts.append(Contact(r["loan_id"], channel, r["stage"], r["occurred_at"], answered,
                                wrong))
    return History(contacts, [e for e in events if e.kind != "task_outcome"])
