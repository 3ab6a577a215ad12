"""The channel table: every way the case reaches a borrower, defined once.

A message channel has an address it needs from the loan, the activity that sends on it (one
adapter in `activities/channels/`), the contact key it is counted under by the caps, and the
channel a failed or unusable step falls back to. Agent channels (call, visit) are worked by people:
they have no send activity. Adding a channel is one row here, one adapter and one emulator route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChannelKind = Literal["message", "agent"]


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    kind: ChannelKind
    # The loan field holding the address this channel sends to ("phone", "email", ...).
    address_field: str
    # The contact key the caps count under is `<contact_prefix>:<hash of key_field>`: a call and an
    # SMS to the same number share "p", so per-number caps see both.
    contact_prefix: str
    key_field: str
    # The send activity's name (message channels only).
    activity: str | None = None
    # Where a step goes when this channel is unusable or the provider refuses the address.
    fallback: str | None = None
    # What an error message calls a missing or refused address ("phone number", "address").
    address_label: str = "address"
    # Messages on this channel carry a subject: its templates start with a `Subject:` line, and
    # the rest keeps its lines. Without one a message is rendered to a single line.
    subject: bool = False


CHANNELS: dict[str, ChannelSpec] = {}

# Recorded histories name these activities: they never change.
SEND_SMS = "send_sms"
SEND_EMAIL = "send_email"


def register(spec: ChannelSpec) -> ChannelSpec:
    """Add a row to the table (the shipped rows below; a test may add its own)."""
    CHANNELS[spec.name] = spec
    return spec


SMS = register(ChannelSpec("sms", "message", "phone", "p", "phone", activity=SEND_SMS,
                           fallback="email", address_label="phone number"))
EMAIL = register(ChannelSpec("email", "message", "email", "e", "email", activity=SEND_EMAIL,
                             subject=True))
CALL = register(ChannelSpec("call", "agent", "phone", "p", "phone", address_label="phone number"))
# A visit goes to the borrower's address, and is counted under the phone key, as since the first
# recorded histories.
VISIT = register(ChannelSpec("visit", "agent", "address", "p", "phone",
                             address_label="postal address"))


def channel(name: str) -> ChannelSpec:
    try:
        return CHANNELS[name]
    except KeyError:
        known = ", ".join(sorted(CHANNELS))
        raise LookupError(f"unknown channel {name!r}; known: {known}") from None


def message_channels() -> list[str]:
    return [c.name for c in CHANNELS.values() if c.kind == "message"]


def unregister(name: str) -> None:
    """Drop a row a test added (the shipped rows stay for the life of the process)."""
    CHANNELS.pop(name, None)
