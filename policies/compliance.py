"""Contact rules as pure functions: local contact windows, quiet days and contact caps.

This is workflow code (passed through the sandbox with `workflow.unsafe.imports_passed_through()`),
so it does no I/O, reads no clock and draws no random numbers: every instant is handed in. Instants
are timezone-aware and come out in UTC. Windows are computed in the borrower's own IANA zone, in
local wall time, then converted back, so "08:00 tomorrow" stays 08:00 on the days clocks change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from contracts.channels import counted_as
from contracts.policy import CapRule, RulePack

# Outcomes each kind of cap counts. A pending call task counts as unanswered (it has not been
# answered yet) and, for caps on conversations, as a possible conversation: it may still connect,
# and a cap must not be exceeded afterwards by calls that were allowed while it was pending.
_COUNTED: dict[str, frozenset[str]] = {
    "attempts": frozenset({"sent", "pending", "connected", "unanswered"}),
    "connected": frozenset({"connected", "pending"}),
    "unanswered": frozenset({"sent", "pending", "unanswered"}),
}
_MAX_SEARCH_DAYS = 800  # quiet days can't be listed forever; stop instead of looping


@dataclass(frozen=True)
class Attempt:
    """One contact attempt, as the caps count it (the borrower's attempts across all loans)."""

    at: datetime
    channel: str
    loan_id: str
    contact_key: str  # the phone number or e-mail address used
    outcome: str  # "sent", "pending", "connected" or "unanswered"


@dataclass(frozen=True)
class CapDecision:
    allowed: bool
    rule: str | None
    retry_at: datetime | None
    reason: str


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: instants must be timezone-aware")
    return instant


def local(instant: datetime, tz: str) -> datetime:
    """The instant as wall time in zone `tz`."""
    return _aware(instant).astimezone(ZoneInfo(tz))


def _to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time.

    In a fall-back fold the earlier of the two instants is taken; in a spring-forward gap the wall
    time never happens, so the first instant after it is taken: the transition itself.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = sorted((first, second))  # local(lo) < wall <= local(hi): bisect to the transition
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) // 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


# Pure, and asked for every step at every wake of every case (the lab plays thousands a second).
@lru_cache(maxsize=16384)
def step_instant(due_date: date, day: int, hour: int, tz: str) -> datetime:
    """UTC instant of local `due_date + day` days at `hour`:00 (the transition if that is a gap)."""
    wall = datetime.combine(due_date + timedelta(days=day), time(hour))
    return _to_utc(wall, ZoneInfo(tz))


def _quiet_rule(pack: RulePack, day: date) -> str | None:
    if day.weekday() in pack.quiet_weekdays:
        return f"{pack.name}.quiet_weekday"
    if day.isoformat() in pack.quiet_dates:
        return f"{pack.name}.quiet_date"
    return None


def window_check(instant: datetime, tz: str, pack: RulePack) -> str | None:
    """None when contact is allowed at `instant`, else the id of the rule that forbids it.

    The window is [window_start, window_end) in the borrower's local time: at 22:00 sharp the
    Chinese window is already closed, as Regulation F's is at 21:00 (the conservative reading).
    """
    wall = local(instant, tz)
    quiet = _quiet_rule(pack, wall.date())
    if quiet is not None:
        return quiet
    if not pack.window_start <= wall.time() < pack.window_end:
        return pack.window_rule
    return None


def next_allowed(instant: datetime, tz: str, pack: RulePack) -> tuple[datetime, str | None]:
    """`(instant, None)` if contact is allowed then, else the next window opening and the rule.

    The opening is found in local wall time (the next allowed date at window_start) and converted
    back to UTC, so a day that is 23 or 25 hours long still opens at 08:00 local.
    """
    rule = window_check(instant, tz, pack)
    if rule is None:
        return instant, None
    zone = ZoneInfo(tz)
    day = local(instant, tz).date()
    for _ in range(_MAX_SEARCH_DAYS):
        if _quiet_rule(pack, day) is None:
            opening = _to_utc(datetime.combine(day, pack.window_start), zone)
            if opening > instant and window_check(opening, tz, pack) is None:
                return opening, rule
        day += timedelta(days=1)
    raise ValueError(f"rule pack {pack.name}: no contact time allowed in {_MAX_SEARCH_DAYS} days")


def _on(cap: CapRule, channel: str) -> bool:
    """Whether `cap` counts contacts on `channel` (an automated voice call counts as a call)."""
    return channel in cap.channels or counted_as(channel) in cap.channels


def _counted(
    cap: CapRule, *, channel: str, at: datetime, zone: ZoneInfo, loan_id: str, contact_key: str,
    attempts: Sequence[Attempt],
) -> list[Attempt]:
    """The attempts `cap` counts against a new contact on `channel` at `at`."""
    today = at.astimezone(zone).date()
    since = at - timedelta(days=cap.period_days)
    chosen = []
    for a in attempts:
        if cap.scope == "contact" and a.contact_key != contact_key:
            continue
        if cap.scope == "debt" and a.loan_id != loan_id:
            continue
        if ((counted_as(a.channel) != counted_as(channel)) if cap.per_channel
                else not _on(cap, a.channel)):
            continue
        if a.outcome not in _COUNTED[cap.counts]:
            continue
        # One day means the borrower's calendar day (the guidelines say "a day"); longer periods
        # roll, which is at least as strict as Regulation F's "seven consecutive days".
        if cap.period_days == 1:
            if a.at.astimezone(zone).date() != today:
                continue
        elif not since < a.at <= at:
            continue
        chosen.append(a)
    return chosen


def _describe(cap: CapRule, channel: str, counted: list[Attempt]) -> str:
    adjective = {"attempts": "", "connected": "connected ", "unanswered": "unanswered "}[cap.counts]
    if counted_as(channel) == "call" and (
            cap.per_channel or all(counted_as(c) == "call" for c in cap.channels)):
        noun = "calls"
    else:
        noun = f"{channel} attempts" if cap.per_channel else "contact attempts"
    when = "today" if cap.period_days == 1 else f"in {cap.period_days} days"
    pending = sum(a.outcome == "pending" for a in counted)
    tail = f" ({pending} still pending)" if pending and cap.counts == "connected" else ""
    return f"{cap.id}: {len(counted)} of {cap.limit} {adjective}{noun} {when}{tail}"


def evaluate_caps(
    pack: RulePack, *, channel: str, at: datetime, tz: str, loan_id: str, contact_key: str,
    attempts: Sequence[Attempt],
) -> CapDecision:
    """May one more contact on `channel` be made at `at`? Caps with limit L allow the Lth.

    `attempts` are the borrower's attempts across all loans; each cap picks its own scope. When
    several rules refuse, the one that defers longest is returned, so a caller looping on
    `retry_at` does not wake up only to be refused again by another rule.
    """
    zone = ZoneInfo(tz)
    _aware(at)
    refusals: list[CapDecision] = []
    for cap in pack.caps:
        if not _on(cap, channel):
            continue
        counted = _counted(
            cap, channel=channel, at=at, zone=zone, loan_id=loan_id, contact_key=contact_key,
            attempts=attempts,
        )
        if len(counted) < cap.limit:
            continue
        if cap.period_days == 1:
            tomorrow = at.astimezone(zone).date() + timedelta(days=1)
            retry = _to_utc(datetime.combine(tomorrow, pack.window_start), zone)
        else:  # when enough of the counted attempts have left the rolling window
            oldest = sorted(a.at for a in counted)[len(counted) - cap.limit]
            retry = oldest + timedelta(days=cap.period_days)
        retry = next_allowed(retry, tz, pack)[0]
        refusals.append(CapDecision(False, cap.id, retry, _describe(cap, channel, counted)))
    quiet_days = pack.post_conversation_quiet_days
    if counted_as(channel) == "call" and quiet_days:
        talks = [
            a.at for a in attempts
            if a.loan_id == loan_id and a.outcome == "connected"
            and a.at <= at < a.at + timedelta(days=quiet_days)
        ]
        if talks:
            last = max(talks)
            retry = next_allowed(last + timedelta(days=quiet_days), tz, pack)[0]
            reason = (
                f"{pack.post_conversation_rule}: conversation on this debt at "
                f"{last.astimezone(UTC).isoformat()}, no call for {quiet_days} days after it"
            )
            refusals.append(CapDecision(False, pack.post_conversation_rule, retry, reason))
    if not refusals:
        return CapDecision(True, None, None, "within caps")
    return max(refusals, key=lambda d: d.retry_at or at)


def may_contact_after_cease(pack: RulePack, notice: str | None) -> bool:
    """After a cease request only the notices the pack allows (FDCPA 805(c)) may still go out."""
    return notice is not None and notice in pack.allowed_after_cease


def caps_left(
    pack: RulePack, *, channel: str, at: datetime, tz: str, loan_id: str, contact_key: str,
    attempts: Sequence[Attempt],
) -> dict[str, int]:
    """Room left under each cap on `channel` at `at` (cap id -> contacts still allowed), counting
    `attempts` as `evaluate_caps` does: what an agent's task shows for the rest of the day."""
    zone = ZoneInfo(tz)
    _aware(at)
    return {
        cap.id: max(0, cap.limit - len(_counted(
            cap, channel=channel, at=at, zone=zone, loan_id=loan_id, contact_key=contact_key,
            attempts=attempts)))
        for cap in pack.caps if _on(cap, channel)
    }


def allowed_periods(start: datetime, end: datetime, tz: str,
                    pack: RulePack) -> list[tuple[datetime, datetime]]:
    """The periods in [start, end) when the pack allows contact (UTC pairs, in order): the local
    window of each day that is not quiet, cut to the span."""
    _aware(start)
    zone = ZoneInfo(tz)
    periods = []
    day = local(start, tz).date()
    last = local(end, tz).date()
    while day <= last:
        if _quiet_rule(pack, day) is None:
            opens = _to_utc(datetime.combine(day, pack.window_start), zone)
            closes = _to_utc(datetime.combine(day, pack.window_end), zone)
            lo, hi = max(opens, start), min(closes, end)
            if lo < hi:
                periods.append((lo, hi))
        day += timedelta(days=1)
    return periods
