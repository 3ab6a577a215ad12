"""Contacts: made inside the borrower's window and under every cap of their rule pack, by this
package's own reading of the packs, and received by the provider inside the window."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bench.soak.reconcile.inputs import (
    COUNTS,
    DAY,
    MADE,
    MESSAGE_CHANNELS,
    PHONE_CHANNELS,
    CaseRow,
    ContactRow,
    Loan,
    OutboxRow,
    ProviderMessage,
)
from bench.soak.reconcile.rules import RulePack


@dataclass
class ComplianceFigures:
    contacts: int = 0
    outside_window: list[str] = field(default_factory=list)
    over_cap: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)  # the system's own breach rows
    late_at_provider: list[str] = field(default_factory=list)
    provider_lag_seconds: list[float] = field(default_factory=list)
    # Notices owed to the borrower (receipts, acknowledgements) are checked against the window
    # before the send but recorded after it: on a compressed clock a second of sending is hours
    # of policy time, so their recorded time says nothing about the window (information).
    notices_recorded_outside: list[str] = field(default_factory=list)

    @property
    def breaches(self) -> int:
        return (len(self.outside_window) + len(self.over_cap) + len(self.flagged)
                + len(self.late_at_provider))


def in_window(at: datetime, tz: str, pack: RulePack) -> bool:
    wall = at.astimezone(ZoneInfo(tz)).time()
    return pack.window_start <= wall < pack.window_end


def _counted_channel(channel: str) -> str:
    return "call" if channel in PHONE_CHANNELS else channel


def _cap_breaches(pack: RulePack, tz: str, made: list[ContactRow]) -> list[str]:
    """Each cap applied to the contacts made: a group over its limit is one finding."""
    found = []
    for cap in pack.caps:
        on = {c for c in cap.channels} | {_counted_channel(c) for c in cap.channels}
        chosen = [c for c in made if c.channel in on or _counted_channel(c.channel) in on]
        chosen = [c for c in chosen if (c.outcome or "sent") in COUNTS[cap.counts]]
        groups: dict[tuple[str, ...], list[ContactRow]] = defaultdict(list)
        for c in chosen:
            scope = {"borrower": c.borrower_key, "contact": c.contact_key,
                     "debt": c.loan_id}[cap.scope]
            channel = _counted_channel(c.channel) if cap.per_channel else "*"
            if cap.period_days == 1:
                groups[(scope, channel, c.occurred_at.astimezone(ZoneInfo(tz)).date()
                        .isoformat())].append(c)
            else:
                groups[(scope, channel)].append(c)
        for key, group in groups.items():
            if cap.period_days == 1:
                if len(group) > cap.limit:
                    found.append(f"{group[0].loan_id}: {cap.id}: {len(group)} > {cap.limit} on "
                                 f"{key[-1]}")
                continue
            at = sorted(c.occurred_at for c in group)
            span = timedelta(days=cap.period_days)
            for i, t in enumerate(at):
                n = sum(1 for u in at[: i + 1] if t - span < u <= t)
                if n > cap.limit:
                    found.append(f"{group[0].loan_id}: {cap.id}: {n} > {cap.limit} in "
                                 f"{cap.period_days} days to {t.isoformat()}")
                    break
    return found


def check_compliance(contacts: Sequence[ContactRow], loans: Sequence[Loan],
                     cases: Sequence[CaseRow], packs: dict[str, RulePack],
                     provider: Sequence[ProviderMessage] = (), outbox: Sequence[OutboxRow] = (),
                     day_seconds: int = DAY,
                     decided_steps: frozenset[str] | None = None) -> ComplianceFigures:
    """Contacts made inside the borrower's window and under every cap of their rule pack, by this
    module's own reading of the packs; and each message received by the provider inside the
    window on the uncompressed clock (the decision's policy time plus the real delay to the
    provider, since a compressed clock turns a second's retry into hours)."""
    f = ComplianceFigures()
    tz_of = {loan.loan_id: loan.timezone for loan in loans}
    case_of = {c.loan_id: c for c in cases}
    made = [c for c in contacts if c.decision in MADE]
    f.contacts = len(made)
    by_borrower: dict[str, list[ContactRow]] = defaultdict(list)
    for c in made:
        placed = _placed(c.loan_id, case_of, tz_of, packs)
        if placed is None:
            continue
        _, tz, pack = placed
        if c.decision == "breach":
            f.flagged.append(f"{c.loan_id}: {c.channel} {c.step_id} recorded as a breach of "
                             f"{c.rule}")
        if not in_window(c.occurred_at, tz, pack):
            local = c.occurred_at.astimezone(ZoneInfo(tz))
            line = (f"{c.loan_id}: {c.channel} {c.step_id} at {local:%H:%M} local ({tz}), "
                    f"window {pack.window_start:%H:%M}-{pack.window_end:%H:%M}")
            if _is_notice(c, decided_steps):
                f.notices_recorded_outside.append(line)
            else:
                f.outside_window.append(line)
        by_borrower[c.borrower_key].append(c)
    for group in by_borrower.values():
        case = case_of[group[0].loan_id]
        f.over_cap.extend(_cap_breaches(packs[case.rule_pack], tz_of[group[0].loan_id], group))
    for loan_id, rows in _by_loan(made).items():
        placed = _placed(loan_id, case_of, tz_of, packs)
        if placed is None:
            continue
        quiet = placed[2].post_conversation_quiet_days
        if not quiet:
            continue
        calls = sorted((c for c in rows if _counted_channel(c.channel) == "call"),
                       key=lambda c: c.occurred_at)
        for i, c in enumerate(calls):
            talks = [t for t in calls[:i] if t.outcome == "connected"
                     and t.occurred_at <= c.occurred_at < t.occurred_at + timedelta(days=quiet)]
            if talks:
                f.over_cap.append(f"{loan_id}: call {c.step_id} within {quiet} days of a "
                                  "conversation")
    decided = [c for c in made if not _is_notice(c, decided_steps)]
    _check_provider_times(f, decided, case_of, tz_of, packs, provider, outbox, day_seconds)
    return f


def _placed(loan_id: str, case_of: dict[str, CaseRow], tz_of: dict[str, str],
            packs: dict[str, RulePack]) -> tuple[CaseRow, str, RulePack] | None:
    """The loan's case row, time zone and rule pack; None unless all three are known."""
    case, tz = case_of.get(loan_id), tz_of.get(loan_id)
    if case is None or tz is None or case.rule_pack not in packs:
        return None
    return case, tz, packs[case.rule_pack]


def _is_notice(c: ContactRow, decided_steps: frozenset[str] | None) -> bool:
    """A message the case owed (no reservation, its row written after the send)."""
    return (decided_steps is not None and c.channel in MESSAGE_CHANNELS
            and c.step_id not in decided_steps)


def _by_loan(rows: Iterable[ContactRow]) -> dict[str, list[ContactRow]]:
    out: dict[str, list[ContactRow]] = defaultdict(list)
    for r in rows:
        out[r.loan_id].append(r)
    return out


def _check_provider_times(f: ComplianceFigures, made: list[ContactRow],
                          case_of: dict[str, CaseRow], tz_of: dict[str, str],
                          packs: dict[str, RulePack], provider: Sequence[ProviderMessage],
                          outbox: Sequence[OutboxRow], day_seconds: int) -> None:
    contact_of = {c.key: c for c in made}
    by_sid = {o.provider_id: o.outbox_key for o in outbox if o.provider_id}
    for m in provider:
        if m.reply or m.channel not in MESSAGE_CHANNELS:
            continue
        key = m.outbox_key if m.channel == "email" else by_sid.get(m.ident)
        c = contact_of.get(key or "")
        if c is None:
            continue
        placed = _placed(c.loan_id, case_of, tz_of, packs)
        if placed is None:
            continue
        case, tz, pack = placed
        # The decision's real instant, from its policy instant on the case's clock.
        origin = case.opened_at
        decided = origin + (c.occurred_at - origin) * (day_seconds / DAY)
        lag = max((m.received_at - decided).total_seconds(), 0.0)
        f.provider_lag_seconds.append(lag)
        at_provider = c.occurred_at + timedelta(seconds=lag)
        if not in_window(at_provider, tz, pack):
            f.late_at_provider.append(f"{c.loan_id}: {m.channel} {c.step_id} reached the provider"
                                      f" {lag:.1f} s after the decision, outside the window")
