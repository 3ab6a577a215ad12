"""`lab fit`: a borrower-behaviour model estimated from the recorded history.

For each stage and channel: the share of contacts that reached a wrong number, that were answered
(where the record says: a call or visit worked by an agent, a voice reminder picked up), and of
those what the borrower did next, each action credited to the contact it followed:

- a reply (a promise, a plan asked for, a dispute, STOP) to the last contact before it;
- a payment that kept no promise and paid no installment to a contact of the stage, channel
  and delay (whole minutes, at least one) that explain the most payments, pair after pair (each
  channel answers at its own speed), else to the last contact before it; in full when it left
  nothing outstanding, else in part (its share of the balance). Its chance is over the contacts
  whose case was still open when the cell's delay had passed: no answer comes after a close;
- a promise is kept or broken as the case records; one still open when the case closed is
  broken if its day had passed, else not counted (kept promises resolve sooner than broken
  ones, so dropping every open one would favour them).

Contacts made together (an SMS and an e-mail of one step) share the credit equally. A message
being read is not recorded: for those channels the model says `answered = 1` and gives each
chance per message sent, which draws the same outcomes as any answered rate with the chances
scaled by it. Cells with fewer than `MIN_CONTACTS` contacts are left out (they fall back to the
model's `default`, fitted over all contacts).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from statistics import median
from typing import Final

import asyncpg

from contracts.behaviour import BehaviourModel, Response
from lab.fit_history import Contact, Event, History, read_history

MIN_CONTACTS: Final = 20
REPLY_KINDS: Final = {"promise": "promises", "plan": "asks_plan", "hold": "disputes",
                      "cease": "opts_out"}
# Events that mark a payment as owed under an arrangement (not an answer to a contact).
OWED_KINDS: Final = frozenset({"promise_kept", "installment_paid", "plan_completed", "settled"})
LAG_WINDOW: Final = timedelta(days=60)
MAX_LAG_ROUNDS: Final = 50  # (cell, delay) pairs looked for before the last-contact rule
Cell = tuple[str, str]  # (stage, channel)


@dataclass
class Tally:
    contacts: int = 0
    wrong: int = 0
    observed: int = 0  # contacts whose answer is on record
    answered: int = 0
    # Credit by action, fractional when contacts made together share it.
    actions: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    kept: float = 0.0
    broken: float = 0.0
    shares: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # days from contact to payment
    pay_base: float = 0.0  # contacts a payment could still have answered (lab.fit exposure)

    def response(self) -> Response:
        usable = self.contacts - self.wrong
        observed = self.observed > 0
        base = self.answered if observed else usable
        answered = (self.answered / self.observed) if observed else 1.0
        chances = {k: (self.actions[k] / base if base else 0.0)
                   for k in ("promises", "asks_plan", "disputes", "opts_out")}
        # Payments over the contacts whose case was still open when the answer was due.
        for k in ("pays_full", "pays_part"):
            chances[k] = self.actions[k] / self.pay_base if self.pay_base else 0.0
        total = sum(chances.values())
        if total > 1:  # credit misplaced by chance in a small cell: scaled to stay a distribution
            chances = {k: v / total for k, v in chances.items()}
        resolved = self.kept + self.broken
        return Response(
            answered=round(answered, 6),
            wrong_number=round(self.wrong / self.contacts, 6) if self.contacts else 0.0,
            keeps_promise=round(self.kept / resolved, 6) if resolved else 0.0,
            part_share=round(median(self.shares), 6) if self.shares else 0.5,
            delay_days=max(0, round(median(self.lags))) if self.lags else 1,
            pays_full=round(chances["pays_full"], 6), pays_part=round(chances["pays_part"], 6),
            promises=round(chances["promises"], 6), asks_plan=round(chances["asks_plan"], 6),
            disputes=round(chances["disputes"], 6), opts_out=round(chances["opts_out"], 6))


@dataclass(frozen=True)
class Fit:
    model: BehaviourModel
    cases: int
    contacts: int
    cells: dict[Cell, int]  # contacts behind each fitted cell
    since: datetime | None

    def header(self) -> str:
        since = f" since {self.since:%Y-%m-%d}" if self.since else ""
        cells = ", ".join(f"{s}.{c} {n}" for (s, c), n in sorted(self.cells.items()))
        return (f"Fitted by `collect lab fit` from {self.contacts} contacts of {self.cases} "
                f"cases{since}.\nContacts per cell: {cells or 'none'}.\n"
                "Message channels: answered = 1, chances per message sent (a read is not "
                "recorded).")


async def fit_model(pool: asyncpg.Pool, *, since: datetime | None = None, name: str = "fitted",
                    version: str | None = None, loan_prefix: str | None = None,
                    min_contacts: int = MIN_CONTACTS) -> Fit:
    history = await read_history(pool, since=since, loan_prefix=loan_prefix)
    return estimate(history, name=name, version=version, since=since, min_contacts=min_contacts)


def estimate(history: History, *, name: str = "fitted", version: str | None = None,
             since: datetime | None = None, min_contacts: int = MIN_CONTACTS) -> Fit:
    tallies: dict[Cell, Tally] = defaultdict(Tally)
    pooled = Tally()
    by_loan: dict[str, list[Contact]] = defaultdict(list)
    for c in history.contacts:
        for t in (tallies[(c.stage, c.channel)], pooled):
            t.contacts += 1
            t.wrong += c.wrong_number
            if c.answered is not None:
                t.observed += 1
                t.answered += c.answered
        if not c.wrong_number and c.answered is not False:
            by_loan[c.loan_id].append(c)  # only a reached borrower can react
    events: dict[str, list[Event]] = defaultdict(list)
    for e in history.events:
        events[e.loan_id].append(e)
    closed: dict[str, datetime] = {}
    payments: list[tuple[Event, Decimal, Decimal]] = []
    for loan_id, evs in events.items():
        closed_at = next((e.at for e in evs if e.kind == "case_closed"), None)
        if closed_at is not None:
            closed[loan_id] = closed_at
        _replies(evs, by_loan.get(loan_id, []), closed_at, tallies, pooled)
        # A payment that kept a promise or paid an installment was owed, not an answer.
        owed = {e.at for e in evs if e.kind in OWED_KINDS}
        for e in evs:
            if e.kind == "payment" and e.at not in owed:
                paid = e.payment()
                if paid is not None:
                    payments.append((e, *paid))
    _credit_payments(payments, by_loan, tallies, pooled)
    _payment_exposure(by_loan, closed, tallies, pooled)
    cells = {cell: t.contacts for cell, t in tallies.items() if t.contacts >= min_contacts}
    by_stage: dict[str, dict[str, Response]] = defaultdict(dict)
    for (stage, channel) in cells:
        by_stage[stage][channel] = tallies[(stage, channel)].response()
    last = max((c.at for c in history.contacts), default=None)
    model = BehaviourModel(name=name, version=version or (
        f"fit-{last:%Y-%m-%d}" if last else "fit-empty"), default=pooled.response(),
        by_stage=dict(by_stage))
    return Fit(model=model, cases=history.cases, contacts=len(history.contacts), cells=cells,
               since=since)


def _replies(evs: list[Event], contacts: list[Contact], closed_at: datetime | None,
             tallies: dict[Cell, Tally], pooled: Tally) -> None:
    """Credit one loan's replies, and settle its promises: kept, broken, or (when the case closed
    for another reason before the promise came due) not counted."""
    promises: list[tuple[Event, list[Contact]]] = []

    def settle(credited: list[Contact], kept: bool) -> None:
        for c in credited:
            for t in (tallies[(c.stage, c.channel)], pooled):
                if kept:
                    t.kept += 1 / len(credited)
                else:
                    t.broken += 1 / len(credited)

    for e in evs:
        if e.kind in REPLY_KINDS:
            if e.kind == "hold" and not e.summary.startswith("dispute"):
                continue
            credited = _last_before(contacts, e.at)
            _credit(tallies, pooled, credited, REPLY_KINDS[e.kind])
            if e.kind == "promise":
                promises.append((e, credited))
        elif e.kind == "promise_cancelled" and promises:
            promises.pop(0)
        elif e.kind in ("promise_kept", "promise_broken") and promises:
            settle(promises.pop(0)[1], e.kind == "promise_kept")
    for promise, credited in promises:
        # Still open when the case closed: broken if its day had passed unpaid, else unknown
        # (counting only those would favour kept promises, which resolve sooner).
        due = _promise_due(promise)
        if closed_at is not None and due is not None and closed_at > due:
            settle(credited, kept=False)


def _promise_due(promise: Event) -> datetime | None:
    try:
        day = date.fromisoformat(str(promise.detail.get("date")))
    except ValueError:
        return None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def _payment_exposure(by_loan: dict[str, list[Contact]], closed: dict[str, datetime],
                      tallies: dict[Cell, Tally], pooled: Tally) -> None:
    """The contacts a payment could have answered: those whose case was still open when the
    cell's delay had passed (a later answer never comes once the case has closed)."""
    for contacts in by_loan.values():
        for c in contacts:
            t = tallies[(c.stage, c.channel)]
            if c.answered is None and t.observed:
                continue  # an answer not recorded in a cell that records them: not counted
            delay = timedelta(days=median(t.lags)) if t.lags else timedelta(0)
            end = closed.get(c.loan_id)
            if end is None or c.at + delay <= end:
                t.pay_base += 1
                pooled.pay_base += 1


def _last_before(contacts: list[Contact], at: datetime) -> list[Contact]:
    """The contacts at the latest moment at or before `at` (several when made together)."""
    before = [c for c in contacts if c.at <= at]
    if not before:
        return []
    latest = max(c.at for c in before)
    return [c for c in before if c.at == latest]


def _credit(tallies: dict[Cell, Tally], pooled: Tally, contacts: list[Contact], action: str,
            share: float | None = None, lag: timedelta | None = None) -> None:
    if not contacts:
        return
    weight = 1 / len(contacts)
    pooled.actions[action] += 1
    for c in contacts:
        t = tallies[(c.stage, c.channel)]
        t.actions[action] += weight
        if share is not None:
            t.shares.append(share)
        if lag is not None:
            t.lags.append(lag / timedelta(days=1))
    if share is not None:
        pooled.shares.append(share)
    if lag is not None:
        pooled.lags.append(lag / timedelta(days=1))


def _minutes(delta: timedelta) -> int:
    return round(delta / timedelta(minutes=1))


def _credit_payments(payments: list[tuple[Event, Decimal, Decimal]],
                     by_loan: dict[str, list[Contact]], tallies: dict[Cell, Tally],
                     pooled: Tally) -> None:
    """Credit each payment to a contact of the cell and delay (in minutes) that explain the most
    payments, cell by cell (each channel answers at its own speed), else to the last contact
    before it."""
    left = list(payments)
    for _ in range(MAX_LAG_ROUNDS):
        found: Counter[tuple[Cell, int]] = Counter()
        for e, _amount, _after in left:
            # A payment made in the minute of a contact did not answer it.
            found.update({((c.stage, c.channel), _minutes(e.at - c.at))
                          for c in by_loan.get(e.loan_id, [])
                          if timedelta(0) < e.at - c.at <= LAG_WINDOW
                          and _minutes(e.at - c.at) > 0})
        if not found:
            break
        # The most common; on a tie the shorter delay (the more recent contact).
        (cell, lag), hits = max(found.items(), key=lambda item: (item[1], -item[0][1]))
        if hits < 2:
            break
        rest = []
        for item in left:
            e = item[0]
            matched = [c for c in by_loan.get(e.loan_id, [])
                       if (c.stage, c.channel) == cell and _minutes(e.at - c.at) == lag]
            if matched:
                _credit_payment(tallies, pooled, matched, item)
            else:
                rest.append(item)
        left = rest
    for item in left:
        _credit_payment(tallies, pooled, _last_before(by_loan.get(item[0].loan_id, []),
                                                      item[0].at), item)


def _credit_payment(tallies: dict[Cell, Tally], pooled: Tally, contacts: list[Contact],
                    item: tuple[Event, Decimal, Decimal]) -> None:
    e, amount, after = item
    if not contacts:
        return
    lag = e.at - contacts[0].at
    if after <= 0:
        _credit(tallies, pooled, contacts, "pays_full", lag=lag)
    else:
        _credit(tallies, pooled, contacts, "pays_part", share=float(amount / (amount + after)),
                lag=lag)
