"""The contact window checked again right before a send goes out.

The case reserves a contact inside the borrower's window, but the send activity may be retried
(a provider's 429 or 500, a timeout, a worker killed) long after: a message decided at 21:59 must
not reach the borrower at 22:03. So the send's own instant is checked against the same rule pack,
in the borrower's zone, just before the provider is called.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.activity_io import SendWindow
from policies import compliance


def send_instant(window: SendWindow, now: datetime | None = None) -> datetime:
    """The send's instant on the case's clock: the decision's, plus the real time since it.

    In production the case's clock is the real one, so this is now. On a compressed clock (the
    demo's day of seconds) the delay is added as it is, uncompressed: what a retry's few seconds
    would be on a real clock, rather than the hours a compressed second stands for.
    """
    now = now or datetime.now(UTC)
    return window.decided_at + max(now - window.decided_real, timedelta(0))


def outside_window(window: SendWindow | None, now: datetime | None = None) -> str | None:
    """The rule that forbids sending now (the window, a quiet day), or None when it is allowed
    or the send carries no window (histories from before the check)."""
    if window is None:
        return None
    return compliance.window_check(send_instant(window, now), window.timezone, window.rule_pack)
