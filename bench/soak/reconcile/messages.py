"""Messages: one provider message per outbox row marked sent, and nothing more or less."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.soak.reconcile.inputs import (
    MADE,
    MESSAGE_CHANNELS,
    OUTSIDE_WINDOW,
    WORKFLOW_PREFIX,
    ContactRow,
    OutboxRow,
    ProviderMessage,
)


@dataclass
class MessageFigures:
    sent: Counter[str] = field(default_factory=Counter)  # outbox rows marked sent, by channel
    delivered: Counter[str] = field(default_factory=Counter)  # provider records matched
    provider_total: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # provider messages nobody claims
    stuck_sends: list[str] = field(default_factory=list)
    # Sends not made because the window had closed when they would have gone out (retried past
    # its end): withheld, the case contacting again later (information).
    withheld: list[str] = field(default_factory=list)
    delivery_reported: int = 0  # contacts whose delivery status came back "delivered"
    delivery_missing: list[str] = field(default_factory=list)


def body_hash(to: str, body: str) -> str:
    """The outbox's body digest of an SMS (sha256 over the number, a newline and the text)."""
    return hashlib.sha256(f"{to}\n{body}".encode()).hexdigest()


def check_messages(provider: Sequence[ProviderMessage], outbox: Sequence[OutboxRow],
                   contacts: Sequence[ContactRow], ended: set[str] | None = None) -> MessageFigures:
    """One provider message per outbox key marked sent, and nothing marked sent that the provider
    does not have; contacts recorded as sent match sends. `ended`: loans whose case has ended (an
    unfinished send of a running case is not stuck yet)."""
    f = MessageFigures()
    by_key = {o.outbox_key: o for o in outbox}
    by_sid = {o.provider_id: o for o in outbox if o.channel == "sms" and o.provider_id}
    by_hash: dict[str, list[OutboxRow]] = defaultdict(list)
    for o in outbox:
        if o.channel == "sms":
            by_hash[o.body_sha256].append(o)
    matched: Counter[str] = Counter()  # outbox key -> provider messages for it
    for m in provider:
        if m.reply or m.channel not in MESSAGE_CHANNELS:
            continue
        f.provider_total[m.channel] += 1
        row: OutboxRow | None
        if m.channel == "email":
            row = by_key.get(m.outbox_key or "")
        else:
            row = by_sid.get(m.ident)
            if row is None:  # a second copy of a message: same number and text as a claimed one
                same = by_hash.get(body_hash(m.to, m.body), [])
                row = same[0] if len(same) == 1 else None
                if row is None and same:
                    f.unexplained.append(f"sms {m.ident}: text matches {len(same)} outbox rows")
                    continue
        if row is None:
            f.unexplained.append(f"{m.channel} {m.ident}: no outbox row claims it")
            continue
        matched[row.outbox_key] += 1
    for key, n in sorted(matched.items()):
        if n > 1:
            f.duplicates.append(f"{key}: {n} provider messages")
    contact_of = {c.key: c for c in contacts}
    for o in outbox:
        loan = _loan_of_key(o.outbox_key)
        if o.channel not in MESSAGE_CHANNELS:
            continue
        if o.status == "sent":
            f.sent[o.channel] += 1
            c = contact_of.get(o.outbox_key)
            if matched[o.outbox_key]:
                f.delivered[o.channel] += 1
                if c is not None and c.delivery_status == "delivered":
                    f.delivery_reported += 1
                else:
                    f.delivery_missing.append(
                        f"{o.outbox_key}: delivery status {c.delivery_status if c else None}")
            else:
                f.losses.append(f"{o.outbox_key}: marked sent ({o.provider_id}), "
                                "the provider has no such message")
            if c is None or c.decision not in MADE:
                f.losses.append(f"{o.outbox_key}: sent, but the contact row is "
                                f"{c.decision if c else 'missing'}")
        elif o.status == "failed" and o.error == OUTSIDE_WINDOW:
            f.withheld.append(f"{o.outbox_key}: not sent, the window had closed")
        elif o.status in ("sending", "retry") and (ended is None or loan in ended):
            f.stuck_sends.append(f"{o.outbox_key}: outbox {o.status} since "
                                 f"{o.claimed_at.isoformat()}")
    for c in contacts:
        if c.channel in MESSAGE_CHANNELS and c.decision in MADE and c.outcome == "sent":
            sent = by_key.get(c.key)
            if sent is None or sent.status != "sent":
                f.losses.append(f"{c.key}: contact recorded as sent, outbox "
                                f"{sent.status if sent else 'missing'}")
    return f


def _loan_of_key(outbox_key: str) -> str:
    """collection-<loan>/<step>/<channel> -> <loan>."""
    return outbox_key.split("/", 1)[0].removeprefix(WORKFLOW_PREFIX)
