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
    # The loan may lack this channel's address (an optional loan column): an empty one makes the
    # channel unusable for the case, with `missing_reason`, and the step falls back.
    optional_address: bool = False
    missing_reason: str = ""
    # The activity that asks the provider what became of a message it accepted (a WeCom task
    # waiting for the staff member's confirmation, a call ringing): message channels whose
    # acceptance is not yet the contact.
    follow_up: str | None = None
    # Accepted means a task for the lender's staff member who owns the contact: the message goes
    # out only once they confirm it, and counts as not sent if they have not by the deadline.
    confirmation: bool = False
    # The caps count this channel as that one (an automated voice reminder is a call).
    counts_as: str | None = None


CHANNELS: dict[str, ChannelSpec] = {}

# Recorded histories name these activities: they never change.
SEND_SMS = "send_sms"
SEND_EMAIL = "send_email"
SEND_WECOM = "send_wecom"
SEND_VOICE = "send_voice"
FOLLOW_UP_WECOM = "follow_up_wecom"
FOLLOW_UP_VOICE = "follow_up_voice"


def register(spec: ChannelSpec) -> ChannelSpec:
    """Add a row to the table (the shipped rows below; a test may add its own)."""
    CHANNELS[spec.name] = spec
    return spec


SMS = register(ChannelSpec("sms", "message", "phone", "p", "phone", activity=SEND_SMS,
                           fallback="email", address_label="phone number"))
EMAIL = register(ChannelSpec("email", "message", "email", "e", "email", activity=SEND_EMAIL,
                             subject=True))
CALL = register(ChannelSpec("call", "agent", "phone", "p", "phone", address_label="phone number"))
# WeCom (enterprise WeChat) external-contact messages: a task for the staff member who owns the
# contact, sent once they confirm it (issue 17). Counted under the external contact's own key.
WECOM = register(ChannelSpec("wecom", "message", "wecom_external_userid", "w",
                             "wecom_external_userid", activity=SEND_WECOM, fallback="sms",
                             address_label="WeCom external contact", optional_address=True,
                             missing_reason="not a WeCom external contact of the lender "
                                            "(no wecom_external_userid on the loan)",
                             follow_up=FOLLOW_UP_WECOM, confirmation=True))
# Automated voice reminders (Twilio Calls, TwiML): a call to the borrower's phone, counted by the
# caps as a call ("p" key, like SMS and agent calls).
VOICE = register(ChannelSpec("voice", "message", "phone", "p", "phone", activity=SEND_VOICE,
                             fallback="sms", address_label="phone number",
                             follow_up=FOLLOW_UP_VOICE, counts_as="call"))
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


def counted_as(name: str) -> str:
    """The channel the caps count `name` as (itself, unless its row says otherwise)."""
    spec = CHANNELS.get(name)
    return spec.counts_as if spec is not None and spec.counts_as else name


def unregister(name: str) -> None:
    """Drop a row a test added (the shipped rows stay for the life of the process)."""
    CHANNELS.pop(name, None)
