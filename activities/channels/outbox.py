"""Exactly-once sends: claim the message before calling the provider, reconcile before resending.

A send is keyed by workflow and step. The first attempt claims the key ("sending"), calls the
provider and marks it "sent". A retry that finds "sent" returns what was sent. A retry that finds
"sending" (the earlier attempt timed out, or its worker died between the provider's answer and the
mark) asks the provider's own log whether the message went out, and sends only when it did not and
the earlier attempt can no longer be in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts.activity_io import SendResult


class PermanentSendError(Exception):
    """The provider refused the message for good (invalid number, rejected address)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class TransientSendError(Exception):
    """The provider answered and did not take the message, or the request provably never reached
    it (no connection); safe to send again later."""

    def __init__(self, code: str, retry_after: timedelta | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


def retry_after(header: str | None) -> timedelta | None:
    """A Retry-After header: whole seconds, or an HTTP date."""
    if not header:
        return None
    value = header.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when - datetime.now(UTC), timedelta(0))


def body_hash(to: str, body: str) -> str:
    return hashlib.sha256(f"{to}\n{body}".encode()).hexdigest()


@dataclass
class _Claim:
    state: str  # "fresh", "done" or "in_flight"
    status: str | None = None
    provider_id: str | None = None
    error: str | None = None
    claimed_at: datetime | None = None


class Outbox:
    def __init__(self, pool: asyncpg.Pool, *, in_flight_for: timedelta = timedelta(seconds=30)):
        # How long an unanswered attempt may still be talking to the provider: longer than the
        # provider clients' own request timeout.
        self.pool = pool
        self.in_flight_for = in_flight_for

    async def _claim(self, key: str, channel: str, digest: str) -> _Claim:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """
                INSERT INTO outbox (outbox_key, channel, status, body_sha256, claimed_at)
                VALUES ($1, $2, 'sending', $3, $4) ON CONFLICT (outbox_key) DO NOTHING
                RETURNING outbox_key
                """,
                key, channel, digest, now,
            )
            if inserted is not None:
                return _Claim("fresh")
            row = await conn.fetchrow("SELECT * FROM outbox WHERE outbox_key = $1 FOR UPDATE", key)
            if row["status"] in ("sent", "failed"):
                return _Claim("done", row["status"], row["provider_id"], row["error"])
            if row["status"] == "retry":
                await conn.execute(
                    "UPDATE outbox SET status = 'sending', claimed_at = $2 WHERE outbox_key = $1",
                    key, now,
                )
                return _Claim("fresh")
            return _Claim("in_flight", claimed_at=row["claimed_at"])

    async def attempted(self, key: str) -> bool:
        """Whether an earlier attempt of this send got as far as the provider (it may have sent)."""
        status = await self.pool.fetchval("SELECT status FROM outbox WHERE outbox_key = $1", key)
        return status is not None and status != "retry"

    async def _set(self, key: str, status: str, provider_id: str | None = None,
                   error: str | None = None) -> None:
        await self.pool.execute(
            """
            UPDATE outbox SET status = $2, provider_id = $3, error = $4,
                sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END
            WHERE outbox_key = $1
            """,
            key, status, provider_id, error,
        )

    async def send_once(
        self,
        key: str,
        channel: str,
        digest: str,
        send: Callable[[], Awaitable[str]],
        lookup: Callable[[datetime], Awaitable[str | None]],
    ) -> SendResult:
        claim = await self._claim(key, channel, digest)
        if claim.state == "done":
            return SendResult(status=claim.status or "sent", provider_id=claim.provider_id,
                              error_code=claim.error, reused=True)
        if claim.state == "in_flight":
            assert claim.claimed_at is not None
            found = await lookup(claim.claimed_at - timedelta(seconds=5))
            if found is not None:
                await self._set(key, "sent", found)
                activity.logger.info("outbox %s: reconciled with the provider's log", channel)
                return SendResult(status="sent", provider_id=found, reused=True)
            if datetime.now(UTC) - claim.claimed_at < self.in_flight_for:
                raise ApplicationError(
                    "an earlier attempt may still be sending this message", type="SendInFlight"
                )
            await self._set(key, "retry")
        try:
            provider_id = await send()
        except PermanentSendError as err:
            await self._set(key, "failed", error=err.code)
            return SendResult(status="failed", error_code=err.code)
        except TransientSendError as err:
            await self._set(key, "retry", error=err.code)
            delay = err.retry_after
            raise ApplicationError(
                f"{channel} provider answered {err.code}; will retry",
                type="ProviderUnavailable",
                next_retry_delay=delay,
            ) from None
        except ConnectionRefusedError as err:
            # Refused at connect: nothing reached the provider, sending again is safe.
            await self._set(key, "retry", error=type(err).__name__)
            raise
        # Anything else (a timeout, a connection reset or closed after the request went out, a
        # worker killed) may come after the provider took the message: the claim stays "sending"
        # and the next attempt reconciles with the provider's log before sending again.
        await self._set(key, "sent", provider_id)
        return SendResult(status="sent", provider_id=provider_id)
