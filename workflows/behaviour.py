"""A simulated borrower: keyed draws from a behaviour model (contracts/behaviour.py), what a
contact leads to, and the borrower's actions applied to the case when their time comes.

Every draw is a hash of the seed, the loan, the policy-time moment it is for and what is drawn,
never of the order things run in, so the lab (workflows/virtual_loop.py) and a real workflow
played with the same model and seed see the same borrower. The actions go through the same code
as the loan system's payments (workflows/arrangements.py) and the agents' updates
(workflows/case_updates.py), refusals included: a promise the rules refuse is not made.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from contracts.behaviour import BehaviourModel, BorrowerAction, Response
from contracts.messages import (
    CeaseInput,
    HoldInput,
    Installment,
    PaymentInput,
    PlanInput,
    PromiseInput,
    TaskOutcome,
)
from policies import compliance
from workflows import arrangements, case_updates, negotiation
from workflows.case import Case
from workflows.case_state import CaseData

BORROWER = "borrower"  # the actor of what the simulated borrower does
AGENT = "simulated-agent"  # the agent who reports a simulated call's outcome
REPLY_AFTER = timedelta(hours=1)  # from an answered contact to a reply (promise, plan, STOP)
PLAN_EVERY = timedelta(days=30)
# Exclusive reactions to an answered contact, in the order their chances are stacked.
REACTIONS = ("pays_full", "pays_part", "promises", "asks_plan", "disputes", "opts_out")


def draw(seed: int, loan_id: str, moment: datetime, what: str) -> float:
    """A number in [0, 1) fixed by the four keys alone."""
    key = f"{seed}|{loan_id}|{moment.astimezone(UTC).isoformat()}|{what}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


@dataclass(frozen=True)
class Reaction:
    """What one contact came to: a wrong number, not answered, or answered and then `action`
    (one of REACTIONS, or None for nothing)."""

    wrong_number: bool
    answered: bool
    action: str | None


def react(model: BehaviourModel, seed: int, loan_id: str, stage: str, channel: str,
          at: datetime) -> tuple[Reaction, Response]:
    r = model.response(stage, channel)
    what = f"{stage}/{channel}"
    if draw(seed, loan_id, at, f"{what}/wrong_number") < r.wrong_number:
        return Reaction(True, False, None), r
    if draw(seed, loan_id, at, f"{what}/answered") >= r.answered:
        return Reaction(False, False, None), r
    u, edge = draw(seed, loan_id, at, f"{what}/reaction"), 0.0
    for name in REACTIONS:
        edge += getattr(r, name)
        if u < edge:
            return Reaction(False, True, name), r
    return Reaction(False, True, None), r


def follow_on(s: CaseData, r: Response, action: str | None, at: datetime, key: str,
              what: str) -> list[BorrowerAction]:
    """The borrower's actions after an answered contact at `at` (`what`: its stage and channel),
    queued under `key`."""
    if action is None:
        return []
    later = at + timedelta(days=r.delay_days)
    on = compliance.local(later, s.loan.timezone).date()
    if action == "pays_full":
        return [BorrowerAction(at=later, kind="payment", key=f"{key}/full", share=Decimal(1))]
    if action == "pays_part":
        share = Decimal(str(r.part_share))
        return [BorrowerAction(at=later, kind="payment", key=f"{key}/part", share=share)]
    reply = at + REPLY_AFTER
    if action == "promises":
        keeps = draw(s.seed, s.loan.loan_id, at, f"{what}/keeps") < r.keeps_promise
        return [BorrowerAction(at=reply, kind="promise", key=f"{key}/promise", on=on,
                               keeps=keeps)]
    if action == "asks_plan":
        n = max(1, r.plan_installments)
        kept = 0
        while kept < n and draw(s.seed, s.loan.loan_id, at,
                                f"{what}/plan/{kept}") < r.keeps_promise:
            kept += 1
        return [BorrowerAction(at=reply, kind="plan", key=f"{key}/plan", on=on, count=n,
                               kept=kept)]
    if action == "disputes":
        return [BorrowerAction(at=reply, kind="dispute", key=f"{key}/dispute")]
    return [BorrowerAction(at=reply, kind="opt_out", key=f"{key}/opt_out")]


def task_outcome(kind: str, reaction: Reaction) -> str:
    if reaction.wrong_number:
        return TaskOutcome.WRONG_NUMBER.value
    if not reaction.answered:
        return (TaskOutcome.NO_ANSWER if kind == "call" else TaskOutcome.NOT_FOUND).value
    if reaction.action == "promises":
        return TaskOutcome.PROMISED.value
    return (TaskOutcome.REACHED if kind == "call" else TaskOutcome.VISITED).value


def queue(s: CaseData, actions: list[BorrowerAction]) -> None:
    """Into the case's queue, in time order (the key breaks ties, not the order of queuing), each
    at a whole second, as a case played against a model decides (workflows/case.py `now`)."""
    for a in actions:
        if a.at.microsecond:
            a.at = a.at.replace(microsecond=0) + timedelta(seconds=1)
        bisect.insort(s.pending_actions, a, key=lambda x: (x.at, x.key))


def next_action_at(s: CaseData) -> datetime | None:
    return s.pending_actions[0].at if s.pending_actions and s.active else None


def apply_due(case: Case) -> None:
    """Apply every queued action whose time has come (while the case is open)."""
    s = case.s
    while s.pending_actions and s.active and s.pending_actions[0].at <= case.now():
        _apply(case, s.pending_actions.pop(0))
        case.wake = True


def _quantized(case: Case, amount: Decimal) -> Decimal:
    exponent = Decimal(1).scaleb(min(0, int(case.s.loan.amount_overdue.as_tuple().exponent)))
    return amount.quantize(exponent, rounding=ROUND_DOWN)


def _pay(case: Case, key: str, amount: Decimal) -> None:
    if amount > 0:
        arrangements.apply_payment(case, PaymentInput(
            payment_id=key, amount=amount, currency=case.s.loan.currency, source=BORROWER))


def _apply(case: Case, a: BorrowerAction) -> None:
    s = case.s
    try:
        if a.kind == "payment":
            amount = a.amount if a.amount is not None else _quantized(
                case, s.outstanding * (a.share or Decimal(0)))
            _pay(case, a.key, amount)
        elif a.kind == "promise" and a.on is not None:
            amount = s.outstanding
            case_updates.promise(case, PromiseInput(agent=BORROWER, amount=amount,
                                                    currency=s.loan.currency, promised_date=a.on))
            if a.keeps:
                queue(s, [BorrowerAction(at=case.at_local(a.on, 12), kind="payment",
                                         key=f"{a.key}/paid", amount=amount)])
        elif a.kind == "plan" and a.on is not None:
            _plan(case, a, a.on)
        elif a.kind == "dispute":
            case_updates.hold(case, HoldInput(actor=BORROWER, kind="dispute",
                                              reason="borrower disputes the debt"))
        elif a.kind == "opt_out":
            case_updates.cease(case, CeaseInput(actor=BORROWER, reason="replied STOP"))
        elif a.kind == "task_outcome":
            _task_outcome(case, a)
    except negotiation.Refusal:
        pass  # refused as the update would be: the borrower's offer is not taken up


def _plan(case: Case, a: BorrowerAction, first: date) -> None:
    s = case.s
    n = max(1, a.count)
    each = _quantized(case, s.outstanding / n)
    amounts = [each] * (n - 1) + [s.outstanding - each * (n - 1)]
    dues = [first + i * PLAN_EVERY for i in range(n)]
    installments = [Installment(amount=amount, due_date=due)
                    for amount, due in zip(amounts, dues, strict=True)]
    case_updates.plan(case, PlanInput(agent=BORROWER, currency=s.loan.currency,
                                      installments=installments))
    queue(s, [BorrowerAction(at=case.at_local(dues[i], 12), kind="payment",
                             key=f"{a.key}/inst{i + 1}", amount=amounts[i])
              for i in range(min(a.kept, n))])


def _task_outcome(case: Case, a: BorrowerAction) -> None:
    """The agent reports the call or visit (as the `task_outcome` update would), then the
    borrower does what the call led to."""
    s = case.s
    task = s.open_task
    if task is None or task.task_key != a.key or task.outcome is not None or a.outcome is None:
        return  # withdrawn or closed meanwhile
    task.at = a.at
    task.outcome = a.outcome
    task.agent = AGENT
    s.assigned_agent = AGENT
    if a.then is not None and a.stage is not None and s.behaviour is not None:
        r = s.behaviour.response(a.stage, task.kind)
        queue(s, follow_on(s, r, a.then, a.created or a.at, a.key, f"{a.stage}/{task.kind}"))
