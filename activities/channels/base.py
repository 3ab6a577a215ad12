"""The one interface every message channel implements, and the send flow they all share.

An adapter knows its provider: how to render for it, how to hand it a message, how to find a
message in its log after a crash, which of its errors a retry can fix, and which mean the address
itself is no good. Everything else (the outbox claim, reconciling before resending, turning errors
into Temporal retries or a "failed" result) is `send` below, written once for every channel.

A channel is its row in `contracts/channels.py` plus one adapter here; `wiring.py` registers the
adapter's activity under the row's activity name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from temporalio import activity

from activities.channels.outbox import (
    Outbox,
    PermanentSendError,
    TransientSendError,
    body_hash,
)
from activities.channels.send_window import outside_window
from activities.database.carried import CarriedWrites
from activities.templates import LinkBuilder, RenderedMessage, render
from contracts.activity_io import (
    NOT_RESERVED,
    OUTSIDE_WINDOW,
    ContactDecision,
    FollowUpInput,
    FollowUpResult,
    SendInput,
    SendResult,
)
from contracts.channels import ChannelSpec, channel

SendActivity = Callable[[SendInput], Awaitable[SendResult]]

# The error code of a send refused before the provider was asked: the address cannot be one.
MALFORMED_ADDRESS = "address_malformed"


class ChannelAdapter(ABC):
    """One provider behind one channel of the table."""

    # The channel table row this adapter sends for.
    channel: ClassVar[str]

    @property
    def spec(self) -> ChannelSpec:
        return channel(self.channel)

    def render(self, inp: SendInput, context: Mapping[str, Any]) -> RenderedMessage:
        """The message for this channel: `templates/<locale>/<template>.<channel>.j2`."""
        return render(inp.template, self.channel, inp.locale, context)

    def usable(self, address: str) -> bool:
        """Whether `address` can be one on this channel at all (format, not reachability)."""
        return bool(address.strip())

    def digest(self, to: str, message: RenderedMessage) -> str:
        """What the outbox and the reconciliation recognise this message by."""
        text = message.body if message.subject is None else f"{message.subject}\n{message.body}"
        return body_hash(to, text)

    @abstractmethod
    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        """Hand the message to the provider once; return its id for the message."""

    @abstractmethod
    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        """The provider's id for this message if its log shows it went out after `since`."""

    @abstractmethod
    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        """What a provider error means: refused for good, safe to retry, or None when the request
        may have reached the provider (the outbox then reconciles before any resend)."""

    def address_unusable(self, error_code: str) -> bool:
        """Whether a permanent error code says the address itself is no good."""
        return error_code == MALFORMED_ADDRESS

    async def follow_up(self, inp: FollowUpInput) -> FollowUpResult:
        """What became of a message the provider accepted (rows with `follow_up` only)."""
        raise NotImplementedError(f"channel {self.channel!r} has no follow-up")

    async def close(self) -> None:  # noqa: B027 (most adapters hold nothing to close)
        """Release the provider client's connections."""

    async def send(self, inp: SendInput, outbox: Outbox, links: LinkBuilder) -> SendResult:
        """Render, then send exactly once through the outbox."""
        if not self.usable(inp.to):
            # Nothing was sent and a retry would decide the same: no claim is needed.
            return SendResult(status="failed", error_code=MALFORMED_ADDRESS, address_unusable=True)
        message = self.render(inp, links.complete(inp.loan_id, inp.context))
        digest = self.digest(inp.to, message)

        async def deliver() -> str:
            # Checked here, after the outbox has made sure no earlier attempt sent it, and right
            # before the provider is asked: a retry past the window's end sends nothing (the
            # outbox row ends "failed", this result OUTSIDE_WINDOW, and the case defers it).
            if (rule := outside_window(inp.window)) is not None:
                activity.logger.info("send %s not made: outside the window (%s)", self.channel,
                                     rule)
                raise PermanentSendError(OUTSIDE_WINDOW)
            try:
                return await self.deliver(inp, message)
            except (PermanentSendError, TransientSendError):
                raise
            except Exception as err:
                known = self.classify(err)
                if known is None:
                    raise
                raise known from None

        async def lookup(since: datetime) -> str | None:
            return await self.find_sent(inp, digest, since)

        result = await outbox.send_once(inp.outbox_key, self.channel, digest, deliver, lookup)
        if result.status == "failed" and result.error_code == OUTSIDE_WINDOW:
            result.status = OUTSIDE_WINDOW
            return result
        if result.status == "failed" and result.error_code:
            result.address_unusable = self.address_unusable(result.error_code)
        return result


# Fills a vault-shaped send's address and borrower name (activities/database/vault.py), or None
# when the borrower was erased.
VaultLookup = Callable[[SendInput], Awaitable[SendInput | None]]
BORROWER_ERASED = "borrower_erased"


def send_activity(adapter: ChannelAdapter, outbox: Outbox, links: LinkBuilder,
                  vault: VaultLookup | None = None,
                  carried: CarriedWrites | None = None) -> SendActivity:
    """The adapter's send as a Temporal activity, named by its row in the channel table. With
    `carried`, a send that carries the case's writes (SendInput.records, reserve, on_sent)
    commits them around the provider call."""
    name = adapter.spec.activity
    if name is None:
        raise ValueError(f"channel {adapter.channel!r} has no send activity in the channel table")

    async def send(inp: SendInput) -> SendResult:
        carries = inp.records is not None or inp.reserve is not None or inp.on_sent is not None
        if not carries:
            return await send_only(inp)
        if carried is None:
            raise RuntimeError("a send that carries writes, and this worker has no database")
        decision = await carried.before(inp.records, inp.reserve)
        if decision is not None and not decision.allowed and await _holds_back(inp, decision):
            return SendResult(status=NOT_RESERVED, decision=decision)
        result = await send_only(inp)
        if result.status == "sent":
            await carried.after(inp.on_sent)
        result.decision = decision
        return result

    async def _holds_back(inp: SendInput, decision: ContactDecision) -> bool:
        """A refused reservation holds the send back. A notice's check (check_only) does only for
        a suppressed channel (the caps do not apply to what the case owes), and not on a retry
        of a send an earlier attempt may have made: that one is not a reservation kept, so an
        opt-out since would otherwise record as skipped a message that went out."""
        if inp.reserve is None or not inp.reserve.check_only:
            return True
        return decision.suppressed and not await outbox.attempted(inp.outbox_key)

    async def send_only(inp: SendInput) -> SendResult:
        if inp.borrower_ref:  # issue 18: the address is read from the vault now, not carried
            if vault is None:  # a worker without the vault's keys: retried once it has them
                raise RuntimeError("a vault-shaped send, and this worker has no vault keys")
            completed = await vault(inp)
            if completed is None:
                return SendResult(status="failed", error_code=BORROWER_ERASED,
                                  address_unusable=True)
            inp = completed
        return await adapter.send(inp, outbox, links)

    send.__name__ = send.__qualname__ = name
    defined: SendActivity = activity.defn(name=name)(send)
    # Lets the wiring close the adapter's client when the worker stops.
    defined.channel_adapter = adapter  # type: ignore[attr-defined]
    return defined


FollowUpActivity = Callable[[FollowUpInput], Awaitable[FollowUpResult]]


def follow_up_activity(adapter: ChannelAdapter) -> FollowUpActivity | None:
    """The adapter's follow-up as an activity named by its row, or None if the row has none."""
    name = adapter.spec.follow_up
    if name is None:
        return None

    async def follow_up(inp: FollowUpInput) -> FollowUpResult:
        return await adapter.follow_up(inp)

    follow_up.__name__ = follow_up.__qualname__ = name
    defined: FollowUpActivity = activity.defn(name=name)(follow_up)
    return defined


def adapter_of(fn: object) -> ChannelAdapter | None:
    """The adapter behind a send activity, or None for any other activity."""
    found = getattr(fn, "channel_adapter", None)
    return found if isinstance(found, ChannelAdapter) else None
