"""The case's updates, one typed function each: the workflow's answer, or its refusal as `Refused`.

Each function takes the input dataclass its update takes (build one from raw values with
`service.inputs`), so a wrong argument is a type error, never a string name sent to the wrong
handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, TypeVar

import asyncpg
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from contracts.messages import (
    CeaseInput,
    CloseInput,
    ExtensionInput,
    HoldInput,
    PaymentInput,
    PaymentResult,
    PaymentStatus,
    PlanInput,
    PromiseInput,
    ResolveHoldInput,
    SettlementInput,
    TaskOutcomeInput,
    UpdateResult,
    WaiverInput,
)
from contracts.names import Update
from service.case_calls import ANSWER_TIMEOUT, answer, closed_or_unknown, handle, rpc_error
from service.errors import CaseClosed, Refused, Unreachable

R = TypeVar("R")

# The reason a payment to a case whose workflow has ended is kept unapplied (followed by the
# case's end state): the money was received, and nothing can apply it any more.
CASE_CLOSED_REASON: Final = "case closed"

UpdateInput = (PromiseInput | PlanInput | ExtensionInput | WaiverInput | SettlementInput
               | HoldInput | ResolveHoldInput | CeaseInput | CloseInput | TaskOutcomeInput)


async def execute(client: Client, loan_id: str, name: Update, arg: object,
                  result_type: type[R], answer_within: float = ANSWER_TIMEOUT) -> R:
    """Run one update and return the workflow's answer; its validator's or handler's refusal is
    `Refused` with the reason, a case that has ended `CaseClosed`, no case `NotFound`."""
    try:
        result: R = await answer(
            handle(client, loan_id).execute_update(name, arg, result_type=result_type),
            loan_id, answer_within)
        return result
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise Refused(reason.splitlines()[0] if reason else "refused") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # The server gave up waiting for the worker: the update may still run; the same call
        # again is answered by the case (a payment id or a repeated agreement is a duplicate).
        raise Unreachable(
            f"no answer from the case for loan {loan_id} in time; try again") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise await closed_or_unknown(client, loan_id) from None
        raise rpc_error(err, loan_id) from None


async def _update(client: Client, loan_id: str, name: Update, arg: UpdateInput,
                  answer_within: float) -> UpdateResult:
    return await execute(client, loan_id, name, arg, UpdateResult, answer_within)


async def promise(client: Client, loan_id: str, arg: PromiseInput, *,
                  answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Record a promise to pay: escalation pauses until the date (plus grace)."""
    return await _update(client, loan_id, Update.PROMISE, arg, answer_within)


async def plan(client: Client, loan_id: str, arg: PlanInput, *,
               answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Agree an installment plan; the installments must add up to the balance."""
    return await _update(client, loan_id, Update.PLAN, arg, answer_within)


async def extend(client: Client, loan_id: str, arg: ExtensionInput, *,
                 answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Move the due date later; the ladder follows the new date."""
    return await _update(client, loan_id, Update.EXTEND, arg, answer_within)


async def waive(client: Client, loan_id: str, arg: WaiverInput, *,
                answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Waive part of the interest or fees."""
    return await _update(client, loan_id, Update.WAIVE, arg, answer_within)


async def settle(client: Client, loan_id: str, arg: SettlementInput, *,
                 answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Offer a settlement below the balance; paid in time, it closes the case."""
    return await _update(client, loan_id, Update.SETTLE, arg, answer_within)


async def hold(client: Client, loan_id: str, arg: HoldInput, *,
               answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Pause contact (dispute, hardship, manual) until resolved or reviewed."""
    return await _update(client, loan_id, Update.HOLD, arg, answer_within)


async def resolve(client: Client, loan_id: str, arg: ResolveHoldInput, *,
                  answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Lift a hold: contact resumes."""
    return await _update(client, loan_id, Update.RESOLVE, arg, answer_within)


async def cease(client: Client, loan_id: str, arg: CeaseInput, *,
                answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """The borrower asked us to stop: only notices the rule pack allows still go out."""
    return await _update(client, loan_id, Update.CEASE, arg, answer_within)


async def close(client: Client, loan_id: str, arg: CloseInput, *,
                answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Close a case for good: no more contact."""
    return await _update(client, loan_id, Update.CLOSE, arg, answer_within)


async def task_outcome(client: Client, loan_id: str, arg: TaskOutcomeInput, *,
                       answer_within: float = ANSWER_TIMEOUT) -> UpdateResult:
    """Report the outcome of a call or visit task."""
    return await _update(client, loan_id, Update.TASK_OUTCOME, arg, answer_within)


async def pay(client: Client, pool: asyncpg.Pool | Callable[[], Awaitable[asyncpg.Pool]],
              loan_id: str, payment: PaymentInput, *,
              answer_within: float = ANSWER_TIMEOUT) -> PaymentResult:
    """Report a payment; the case's answer, or, when its workflow has ended (paid, written off,
    closed, failed), the payment kept as unapplied with the reason: money received is never
    dropped, so the amounts reported add up to those applied plus those unapplied. `pool` may be
    a function that opens one, called only for such a payment (the CLI opens none otherwise)."""
    try:
        return await execute(client, loan_id, Update.PAY, payment, PaymentResult, answer_within)
    except CaseClosed:
        if not isinstance(pool, asyncpg.Pool):
            pool = await pool()
        kept = await keep_unapplied(pool, loan_id, payment)
        if kept is None:  # no row for the case: nothing to keep it against
            raise
        return kept


async def keep_unapplied(pool: asyncpg.Pool, loan_id: str,
                         payment: PaymentInput) -> PaymentResult | None:
    """Keep a payment to an ended case in `unapplied_payments` ("case closed (<state>)"), once;
    a payment id the case already applied or kept is a duplicate. None if the case has no row."""
    async with pool.acquire() as conn, conn.transaction():
        case = await conn.fetchrow(
            "SELECT state, currency, outstanding FROM cases WHERE loan_id = $1", loan_id)
        if case is None:
            return None
        reason = f"{CASE_CLOSED_REASON} ({case['state']})"
        applied = await conn.fetchval(
            "SELECT 1 FROM payments WHERE loan_id = $1 AND payment_id = $2",
            loan_id, payment.payment_id)
        kept = None if applied else await conn.fetchval(
            """
            INSERT INTO unapplied_payments (loan_id, payment_id, amount, currency, received_at,
                reason)
            VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (loan_id, payment_id) DO NOTHING RETURNING id
            """,
            loan_id, payment.payment_id, payment.amount, payment.currency,
            payment.paid_at or datetime.now(UTC), reason)
    outstanding, currency = case["outstanding"], str(case["currency"]).strip()
    if kept is None:
        return PaymentResult(payment.payment_id, PaymentStatus.DUPLICATE,
                             f"payment {payment.payment_id} was reported before", outstanding,
                             currency)
    return PaymentResult(payment.payment_id, PaymentStatus.UNAPPLIED,
                         f"payment {payment.payment_id} kept unapplied: {reason}", outstanding,
                         currency, reason=reason)
