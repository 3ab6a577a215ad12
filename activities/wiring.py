"""The activities a worker registers, built from their clients and the provider settings."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import asyncpg

from activities.contacts import ContactActivities
from activities.email import EmailActivities, sendgrid_client
from activities.outbox import Outbox
from activities.policies import resolve_policy
from activities.records import RecordActivities
from activities.sms import SmsActivities, twilio_client
from activities.tasks import TaskActivities


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


def activities_for(pool: asyncpg.Pool, p: Providers) -> list:
    outbox = Outbox(pool, in_flight_for=p.in_flight_for)
    sms = SmsActivities(twilio_client(p.twilio_sid, p.twilio_token, p.twilio_base_url, p.http_timeout_seconds),
                        p.twilio_from, outbox, p.payment_link_base)
    email = EmailActivities(sendgrid_client(p.sendgrid_key, p.sendgrid_base_url), p.sendgrid_from,
                            outbox, p.payment_link_base, p.http_timeout_seconds)
    records, contacts, tasks = RecordActivities(pool), ContactActivities(pool), TaskActivities(pool)
    return [
        resolve_policy,
        records.record, records.record_legal_action,
        contacts.reserve_contact, contacts.record_contact,
        sms.send_sms, email.send_email,
        tasks.create_task, tasks.close_task,
    ]
