"""Whether an agent may call a borrower now, under the loan's rule pack, and who the borrower is.

    window = call_window("Asia/Shanghai", "cn")      # allowed, local time, next opening, rule
    loan = await borrower(client, "L1")              # the loan as the case was opened with it

The window is the contact rules' own (`policies.compliance.next_allowed`), so the console shows
exactly what the workflow enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts.messages import LoanInput
from contracts.names import workflow_id_for
from contracts.policy import RulePack
from infra.codec import CodecError
from policies.compliance import local, next_allowed
from policies.loader import load_rule_packs
from service.case_calls import not_found, rpc_error
from service.errors import BadInput, Refused
from workflows.collection_workflow import CaseInput


@dataclass(frozen=True)
class CallWindow:
    allowed: bool
    timezone: str
    local_now: datetime  # the borrower's wall clock now
    next_allowed: datetime | None  # UTC; None while allowed
    rule: str | None  # the rule that forbids calling now
    window: str  # "08:00-22:00"


@cache
def _packs() -> dict[str, RulePack]:
    return load_rule_packs()


def rule_pack(name: str) -> RulePack:
    pack = _packs().get(name)
    if pack is None:
        raise BadInput("rule_pack", f"no rule pack named {name[:40]!r}")
    return pack


def call_window(timezone: str, pack_name: str, at: datetime | None = None) -> CallWindow:
    """May the borrower be called at `at` (default now)? If not, when next, and which rule."""
    pack = rule_pack(pack_name)
    now = at or datetime.now(UTC)
    opening, rule = next_allowed(now, timezone, pack)
    return CallWindow(
        allowed=rule is None, timezone=timezone, local_now=local(now, timezone),
        next_allowed=None if rule is None else opening, rule=rule,
        window=f"{pack.window_start:%H:%M}-{pack.window_end:%H:%M}")


async def borrower(client: Client, loan_id: str) -> LoanInput:
    """The loan the case holds (its current run's input; decrypted by the client's codec).

    Personal data: callers show it only to the agent holding the case's task, and log the reveal.
    """
    handle = client.get_workflow_handle(workflow_id_for(loan_id))
    try:
        async for event in handle.fetch_history_events(page_size=1):
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                break
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            values = await client.data_converter.decode(payloads, [CaseInput])
            found = values[0] if values else None
            if isinstance(found, CaseInput):
                return found.loan
            break
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise not_found(loan_id) from None
        raise rpc_error(err, loan_id) from None
    except (CodecError, ValueError, TypeError):
        # Encrypted with a key this process does not hold (another deployment's, or one rotated
        # out), or not a case input: one unreadable case must not take a whole queue down.
        pass
    raise Refused(f"case for loan {loan_id}: its start input cannot be read")
