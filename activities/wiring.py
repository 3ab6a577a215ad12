"""The activities a worker registers, built from their clients and the provider settings.

The send activities come from the channel adapters, one per message channel of the table
(`contracts/channels.py`), each registered under its row's activity name: a new channel is its row
and its adapter, passed here in `channels`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from activities.channels.base import (
    ChannelAdapter,
    adapter_of,
    follow_up_activity,
    send_activity,
)
from activities.channels.email import SendGridEmail, sendgrid_client
from activities.channels.outbox import Outbox
from activities.channels.sms import TwilioSms, twilio_client
from activities.channels.voice import TwilioVoice
from activities.channels.wecom import WeComMessages
from activities.channels.wecom_client import DEFAULT_BASE_URL, WeComClient
from activities.database.carried import CarriedWrites
from activities.database.contacts import ContactActivities
from activities.database.placements import PlacementActivities
from activities.database.purge import PurgeActivities
from activities.database.records import RecordActivities
from activities.database.tasks import TaskActivities
from activities.database.vault import VaultReader
from activities.policies import resolve_policy
from activities.templates import LinkBuilder
from contracts.channels import message_channels
from infra.vault_crypto import VaultCipher
from infra.vault_crypto import vault_keys as default_vault_keys


@dataclasses.dataclass
class Providers:
    twilio_sid: str
    twilio_token: str
    twilio_base_url: str | None
    twilio_from: str
    sendgrid_key: str
    sendgrid_base_url: str | None
    sendgrid_from: str
    payment_link_base: str = "https://pay.lender.example/loan"
    http_timeout_seconds: float = 20
    in_flight_for: timedelta = timedelta(seconds=30)
    # WeCom (issue 17): the corp's id and the external-contact app's secret; empty: not configured
    # (a WeCom step is refused, and falls back).
    wecom_corp_id: str = ""
    wecom_secret: str = ""
    wecom_base_url: str | None = None
    # Where Twilio calls back about voice reminders (the API's base URL), and the agents' line a
    # borrower pressing 1 is connected to. Without a base, calls carry no callback and no "press 1".
    voice_callback_base: str | None = None
    voice_agent_number: str = ""


def shipped_adapters(p: Providers) -> list[ChannelAdapter]:
    """The adapters of the channels this project ships, with their provider clients."""
    twilio = twilio_client(p.twilio_sid, p.twilio_token, p.twilio_base_url, p.http_timeout_seconds)
    sendgrid = sendgrid_client(p.sendgrid_key, p.sendgrid_base_url)
    calls = twilio_client(p.twilio_sid, p.twilio_token, p.twilio_base_url, p.http_timeout_seconds)
    wecom = WeComClient(p.wecom_corp_id, p.wecom_secret, p.wecom_base_url or DEFAULT_BASE_URL,
                        p.http_timeout_seconds)
    return [TwilioSms(twilio, p.twilio_from),
            SendGridEmail(sendgrid, p.sendgrid_from, p.http_timeout_seconds),
            WeComMessages(wecom),
            TwilioVoice(calls, p.twilio_from, p.voice_callback_base, p.voice_agent_number)]


def _check_covers_table(names: Sequence[str]) -> None:
    """One adapter per message channel of the table: a row without one would leave its sends
    waiting for a worker that never comes; an adapter without a row could never be sent to."""
    rows = message_channels()
    problems = [f"two adapters for channel {n!r}" for n in sorted({n for n in names
                                                                  if names.count(n) > 1})]
    problems += [f"no row in the channel table for adapter {n!r}" for n in names if n not in rows]
    problems += [f"no adapter for channel {n!r}" for n in rows if n not in names]
    if problems:
        raise LookupError("; ".join(problems))


def activities_for(pool: asyncpg.Pool, p: Providers, *,
                   channels: Sequence[ChannelAdapter] = (),
                   vault_keys: Mapping[str, bytes] | None = None) -> list[Callable[..., Any]]:
    """Every activity a case worker runs; `channels` adds adapters beyond the shipped ones;
    `vault_keys` read the borrower vault at send time (issue 18), else the environment's keys."""
    # Checked before any client exists: a refused wiring leaves no connection open.
    _check_covers_table([TwilioSms.channel, SendGridEmail.channel, WeComMessages.channel,
                         TwilioVoice.channel, *(a.channel for a in channels)])
    adapters = [*shipped_adapters(p), *channels]
    outbox = Outbox(pool, in_flight_for=p.in_flight_for)
    links = LinkBuilder(p.payment_link_base)
    records, contacts, tasks = RecordActivities(pool), ContactActivities(pool), TaskActivities(pool)
    keys = vault_keys if vault_keys is not None else default_vault_keys()
    vault = VaultReader(pool, VaultCipher(keys)).complete_send if keys else None
    carried = CarriedWrites(pool)
    return [
        resolve_policy,
        records.record, records.record_legal_action,
        contacts.reserve_contact, contacts.record_contact,
        *(send_activity(adapter, outbox, links, vault, carried) for adapter in adapters),
        *(f for f in map(follow_up_activity, adapters) if f is not None),
        tasks.create_task, tasks.close_task,
        *_placement_activities(pool),
        PurgeActivities(pool).purge_expired,  # the retention purge (issue 18)
    ]


def _placement_activities(pool: asyncpg.Pool) -> list[Callable[..., Any]]:
    placements = PlacementActivities(pool)
    return [placements.agency_roster, placements.record_placement]


async def close_activities(activities: Iterable[object]) -> None:
    """Close the provider clients behind `activities` (once the worker has stopped)."""
    for fn in activities:
        adapter = adapter_of(fn)
        if adapter is not None:
            await adapter.close()
