"""Injected provider failures: which recipient and channel they hit, how often, and how."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

SMS, EMAIL, ANY = "sms", "email", "*"
CHANNELS = {SMS, EMAIL, ANY}
FAULT_KINDS = {"rate_limit", "server_error", "invalid_number", "rejected", "slow"}


def norm(address: str) -> str:
    """Email addresses are case-insensitive; comparing folded forms avoids surprising misses."""
    return address.strip().casefold()


@dataclass
class Fault:
    """One injected failure; ``times`` counts down so tests can model transient errors."""

    id: str
    recipient: str
    channel: str
    kind: str
    times: int | None = None
    retry_after: int = 1
    delay: float = 0.0

    def matches(self, channel: str, recipient: str) -> bool:
        return self.channel in (ANY, channel) and self.recipient in (ANY, norm(recipient))


def new_fault(recipient: str, kind: str, channel: str, times: int | None, retry_after: int,
              delay: float, channels: set[str]) -> Fault:
    """``channels``: the emulator's, including any a test added with its own routes."""
    if kind not in FAULT_KINDS or channel not in channels:
        raise ValueError(f"unknown fault kind {kind!r} or channel {channel!r}")
    if times is not None and times < 1:
        raise ValueError("times must be >= 1 or None")
    return Fault("FT" + secrets.token_hex(8), norm(recipient), channel, kind, times,
                 int(retry_after), float(delay))


def take(faults: list[Fault], channel: str, recipients: list[str]) -> Fault | None:
    """Consume one use of the first fault matching any recipient of this request."""
    for fault in faults:
        if any(fault.matches(channel, r) for r in recipients):
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    faults.remove(fault)
            return fault
    return None
