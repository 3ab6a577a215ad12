"""Where a message got to, on its contact row, from the providers' reports; and the reports that
arrived before the case had written the message's contact row as sent, linked once it has.

A status callback can overtake the send that caused it: Twilio may call back before its answer
to our request reaches the worker (so the outbox does not know the SID yet), and a notice's
contact row is written only after its send. Such a report is kept in `provider_events` unlinked
(no loan) and linked here when the contact row is written as sent: applied to it and, for a
message not delivered, told to the case. Whichever comes first, the report or the row, the same
advisory locks (one per provider message id, one per outbox key) make the other see it, once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
from temporalio import activity
from temporalio.service import RPCError

from contracts.messages import DeliveryReport
from contracts.names import Signal, workflow_id_for

# How far a delivery status has got: a late "sent" never overwrites "delivered".
STATUS_RANK: Final = {"accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "processed": 1,
                      "deferred": 1, "sent": 2, "delivered": 3, "read": 4, "opened": 4,
                      "clicked": 4}
FAILED_RANK: Final = 9  # undelivered, failed, bounced, dropped, blocked: always recorded
# Twilio statuses that say the message was not delivered, and its error codes that say the
# number cannot take SMS at all (no retry, use another channel).
TWILIO_UNDELIVERED: Final = frozenset({"undelivered", "failed"})
NUMBER_UNUSABLE_CODES: Final = {"30005": "unknown handset",
                                "30006": "landline or unreachable carrier"}
# SendGrid event (and bounce type) -> (delivery status, suppression kind or None).
SENDGRID_EVENTS: Final[dict[str, tuple[str | None, str | None]]] = {
    "processed": ("processed", None),
    "deferred": ("deferred", None),
    "delivered": ("delivered", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "bounce": ("bounced", "bounce"),
    "blocked": ("blocked", None),  # a soft bounce: recorded, the next step tries again
    "dropped": ("dropped", "bounce"),
    "spamreport": ("spamreport", "spamreport"),
    "unsubscribe": (None, "unsubscribe"),
    "group_unsubscribe": (None, "unsubscribe"),
    "group_resubscribe": (None, None),
}
SENDGRID_UNDELIVERED: Final = frozenset({"bounce", "dropped"})


async def lock_message(conn: asyncpg.Connection, *names: str) -> None:
    """Serialise a report with the contact row of its message, by provider id or outbox key
    (held until the transaction ends; callers take the key's lock before the provider id's)."""
    for name in names:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                           f"delivery:{name}")


async def set_delivery(conn: asyncpg.Connection, outbox_key: str, status: str, error: str | None,
                       provider_id: str | None, at: datetime) -> None:
    """Move the contact row's delivery status forward (a failure is always kept)."""
    current = await conn.fetchval(
        "SELECT delivery_status FROM contacts WHERE idempotency_key = $1 FOR UPDATE", outbox_key)
    new_rank = STATUS_RANK.get(status, FAILED_RANK)
    behind = current is not None and STATUS_RANK.get(current, FAILED_RANK) >= new_rank
    if behind and new_rank < FAILED_RANK:
        return
    await conn.execute(
        """
        UPDATE contacts SET delivery_status = $2, delivery_error = $3, delivery_at = $4,
            provider_id = COALESCE(provider_id, $5)
        WHERE idempotency_key = $1
        """, outbox_key, status, error, at, provider_id)


def twilio_report(contact: asyncpg.Record, status: str, code: str | None,
                  at: datetime) -> DeliveryReport | None:
    """What the case is told of a Twilio status: only that its message was not delivered."""
    if status not in TWILIO_UNDELIVERED:
        return None
    return DeliveryReport(
        loan_id=contact["loan_id"], outbox_key=contact["idempotency_key"],
        step_id=contact["step_id"], channel=contact["channel"], status=status,
        error_code=f"twilio_{code}" if code else "",
        address_unusable=code in NUMBER_UNUSABLE_CODES, at=at)


def sendgrid_report(contact: asyncpg.Record, kind: str, at: datetime) -> DeliveryReport | None:
    """What the case is told of a SendGrid event: a hard bounce or a drop (address unusable)."""
    if kind not in SENDGRID_UNDELIVERED:
        return None
    return DeliveryReport(
        loan_id=contact["loan_id"], outbox_key=contact["idempotency_key"],
        step_id=contact["step_id"], channel=contact["channel"], status=kind,
        error_code=f"sendgrid_{kind}", address_unusable=True, at=at)


async def _apply(conn: asyncpg.Connection, contact: asyncpg.Record,
                 event: asyncpg.Record) -> DeliveryReport | None:
    """One stored report applied to its contact row, as the webhook would have applied it."""
    key, kind, at = contact["idempotency_key"], event["kind"], event["occurred_at"]
    if event["provider"] == "twilio":
        code = event["error_code"]
        await set_delivery(conn, key, kind, f"twilio_{code}" if code else None,
                           event["provider_id"], at)
        return twilio_report(contact, kind, code, at)
    status = SENDGRID_EVENTS.get(kind, (None, None))[0]
    if status is not None:
        await set_delivery(conn, key, status,
                           f"sendgrid_{kind}" if STATUS_RANK.get(status) is None else None,
                           event["provider_id"], at)
    return sendgrid_report(contact, kind, at)


async def lock_for_contact(conn: asyncpg.Connection, outbox_key: str) -> str | None:
    """Take the message's locks before its contact row is written (a webhook holding one waits
    on that row: taken after it, they would deadlock); returns the provider's id, if known."""
    provider_id: str | None = await conn.fetchval(
        "SELECT provider_id FROM outbox WHERE outbox_key = $1", outbox_key)
    await lock_message(conn, outbox_key, *([provider_id] if provider_id else []))
    return provider_id


async def link_early_reports(conn: asyncpg.Connection, outbox_key: str,
                             provider_id: str | None) -> list[DeliveryReport]:
    """Apply the reports about this message that arrived before its contact row (the caller has
    just written it as sent, holding `lock_for_contact`'s locks); returns what the case must be
    told."""
    contact = await conn.fetchrow(
        "SELECT idempotency_key, loan_id, step_id, channel FROM contacts "
        "WHERE idempotency_key = $1", outbox_key)
    if contact is None:
        return []
    events = await conn.fetch(
        """
        SELECT id, provider, kind, provider_id, error_code, occurred_at FROM provider_events
        WHERE loan_id IS NULL AND (outbox_key = $1 OR (provider = 'twilio' AND provider_id = $2))
        ORDER BY occurred_at, id
        """, outbox_key, provider_id)
    reports = []
    for event in events:
        await conn.execute(
            "UPDATE provider_events SET outbox_key = $2, loan_id = $3 WHERE id = $1",
            event["id"], outbox_key, contact["loan_id"])
        report = await _apply(conn, contact, event)
        if report is not None:
            reports.append(report)
    return reports


async def tell_own_case(reports: list[DeliveryReport]) -> None:
    """Signal the case (from inside its activity) each message of its that was not delivered,
    once the rows are committed (each report is linked, so told, once). Outside a worker (a
    direct call) or with the server unreachable, the rows hold the report; nothing is raised."""
    if not reports:
        return
    try:
        client = activity.client()
    except RuntimeError:
        return
    for report in reports:
        try:
            await client.get_workflow_handle(workflow_id_for(report.loan_id)).signal(
                Signal.DELIVERY_FAILED, report)
        except RPCError as err:
            activity.logger.warning("early delivery report not signalled to its case: %s",
                                    err.status.name)
