"""The channel interface is real: a channel that exists only in this file (a table row, an adapter,
an emulator route) is sent to by a policy step through the real workflow; the policy validator
knows channels from the table; and the shipped adapters classify their providers' errors."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from python_http_client import exceptions as http_errors
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from twilio.base.exceptions import TwilioRestException

from activities.channels.base import ChannelAdapter
from activities.channels.email import SendGridEmail, sendgrid_client
from activities.channels.outbox import Outbox, PermanentSendError, TransientSendError
from activities.channels.sms import TwilioSms, twilio_client
from activities.templates import LinkBuilder, RenderedMessage, render
from activities.wiring import Providers, activities_for, close_activities
from contracts.activity_io import SendInput
from contracts.channels import ChannelSpec, register, unregister
from contracts.messages import CaseState, Stage
from contracts.policy import Step
from infra.emulator import ProviderEmulator
from policies.loader import PolicyError, load_rule_packs, parse_policy
from tests.helpers import make_loan, pinned, running_emulator, start_case, today_of
from workflows.collection_workflow import CollectionWorkflow
from workflows.sandbox import sandbox_runner

PAGER = "pager"
PAGES = "/pager/v1/pages"


# ------------------------------------------------------------------------ the test-only channel


@pytest.fixture
def pager_row() -> Iterator[ChannelSpec]:
    """The channel's row in the table, for this test only."""
    spec = register(ChannelSpec(PAGER, "message", "phone", "pg", "phone", activity="send_pager",
                                address_label="pager number"))
    try:
        yield spec
    finally:
        unregister(PAGER)


def pager_routes(emu: ProviderEmulator) -> list[web.RouteDef]:
    """A made-up paging provider: POST a page, list pages by the sender's reference."""

    async def create(request: web.Request) -> web.Response:
        page = await request.json()
        fault = emu.take_fault(PAGER, [page["to"]])
        if fault is not None and fault.kind == "rate_limit":
            return web.json_response({"error": "slow down"}, status=429,
                                     headers={"Retry-After": str(fault.retry_after)})
        if fault is not None:
            return web.json_response({"error": "no such pager"}, status=422)
        ident = "PG" + uuid.uuid4().hex
        emu.store(PAGER, ident, page["to"], "lender", body=page["text"],
                  custom_args={"ref": page["ref"]})
        return web.json_response({"id": ident}, status=201)

    async def listing(request: web.Request) -> web.Response:
        ref = request.query.get("ref")
        found = [m["id"] for m in emu.messages(channel=PAGER) if m["custom_args"].get("ref") == ref]
        return web.json_response({"pages": found})

    return [web.post(PAGES, create), web.get(PAGES, listing)]


class PagerAdapter(ChannelAdapter):
    """The channel's adapter: its texts are the SMS ones, its provider the route above."""

    channel = PAGER

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self.session

    def render(self, inp: SendInput, context: Mapping[str, Any]) -> RenderedMessage:
        return render(inp.template, "sms", inp.locale, context)

    async def deliver(self, inp: SendInput, message: RenderedMessage) -> str:
        page = {"to": inp.to, "text": message.body, "ref": inp.outbox_key}
        async with self._session().post(self.base_url + PAGES, json=page) as resp:
            if resp.status == 429:
                raise TransientSendError("pager_429")
            if resp.status == 422:
                raise PermanentSendError("pager_422")
            resp.raise_for_status()
            return str((await resp.json())["id"])

    async def find_sent(self, inp: SendInput, digest: str, since: datetime) -> str | None:
        async with self._session().get(self.base_url + PAGES,
                                       params={"ref": inp.outbox_key}) as resp:
            pages = (await resp.json())["pages"]
            return str(pages[0]) if pages else None

    def classify(self, err: Exception) -> PermanentSendError | TransientSendError | None:
        if isinstance(err, aiohttp.ClientConnectorError):
            return TransientSendError("connect_failed")
        return None

    def address_unusable(self, error_code: str) -> bool:
        return super().address_unusable(error_code) or error_code == "pager_422"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


@pytest.fixture
async def pager_emulator() -> AsyncIterator[ProviderEmulator]:
    emu = ProviderEmulator()
    emu.add_routes(pager_routes(emu), channel=PAGER)
    async with running_emulator(emu):
        yield emu


@pytest.fixture
async def pager_worker(
    pager_row: ChannelSpec, pager_emulator: ProviderEmulator, ts_env: WorkflowEnvironment,
    pool: asyncpg.Pool, providers: Providers,
) -> AsyncIterator[Worker]:
    here = dataclasses.replace(providers, twilio_base_url=pager_emulator.url,
                               sendgrid_base_url=pager_emulator.url)
    acts = activities_for(pool, here, channels=[PagerAdapter(pager_emulator.url)])
    try:
        async with Worker(ts_env.client, task_queue=f"pager-{uuid.uuid4().hex[:8]}",
                          workflows=[CollectionWorkflow], activities=acts,
                          workflow_runner=sandbox_runner()) as worker:
            yield worker
    finally:
        await close_activities(acts)


async def test_a_policy_step_sends_on_a_channel_added_in_the_test(
    ts_env: WorkflowEnvironment, pager_worker: Worker, pager_emulator: ProviderEmulator,
    pool: asyncpg.Pool, providers: Providers, loan_id: str,
) -> None:
    today = today_of(await ts_env.get_current_time())
    loan = make_loan(loan_id, due=today + timedelta(days=2))
    policy = pinned(loan).model_copy(update={"steps": [
        Step(id="page", day=1, hour=10, stage=Stage.EARLY, kind="message", channels=[PAGER],
             template="early_reminder"),
        Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
             template="write_off_notice", notice="collection_ending"),
    ]})
    handle = await start_case(ts_env.client, loan, pager_worker.task_queue, policy)
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.WRITTEN_OFF

    [page] = pager_emulator.messages(channel=PAGER)
    # The body is the SMS template rendered with what the workflow asked the activity to send.
    [sent] = await _scheduled_inputs(ts_env, handle, "send_pager")
    links = LinkBuilder(providers.payment_link_base)
    expected = render(sent.template, "sms", sent.locale, links.complete(loan.loan_id, sent.context))
    assert (page["to"], page["body"]) == (loan.phone, expected.body)
    assert loan.loan_id in page["body"]
    assert pager_emulator.messages(channel="sms") == []  # the step named only the pager
    [contact] = await pool.fetch(
        "SELECT * FROM contacts WHERE loan_id = $1 AND channel = $2", loan.loan_id, PAGER)
    assert (contact["step_id"], contact["decision"], contact["template"]) == (
        "page", "sent", "early_reminder")
    assert contact["contact_key"].startswith("pg:")
    outbox = await pool.fetchrow("SELECT * FROM outbox WHERE outbox_key = $1", sent.outbox_key)
    assert (outbox["channel"], outbox["status"], outbox["provider_id"]) == (
        PAGER, "sent", page["id"])


async def _scheduled_inputs(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any],
                            activity_type: str) -> list[SendInput]:
    """The inputs of every `activity_type` the workflow scheduled, from its history."""
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == activity_type:
            [inp] = await env.client.data_converter.decode(attrs.input.payloads, [SendInput])
            found.append(inp)
    return found


# ------------------------------------------------------------------- channels in policies


POLICY = """
name = "paging"
version = "1"
rule_pack = "cn"

[[segments]]
name = "all"
ladder = "standard"

[[ladders.standard]]
id = "page"
day = 1
stage = "early"
kind = "message"
channels = ["{channel}"]
template = "early_reminder"

[[ladders.standard]]
id = "write-off"
day = 180
stage = "written_off"
kind = "write_off"
template = "write_off_notice"
notice = "collection_ending"
"""


def test_policy_validation_refuses_a_channel_not_in_the_table() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(POLICY.format(channel=PAGER), "paging.toml", rule_packs=load_rule_packs(),
                     templates=None)
    assert str(raised.value) == (
        "paging.toml: ladder 'standard' step 1 'page': unknown channel 'pager' "
        "(allowed: sms, email, wecom, voice)")
    with pytest.raises(ValueError, match="unknown_channel"):
        Step(id="x", day=1, stage=Stage.EARLY, kind="message", channels=[PAGER])


def test_policy_validation_accepts_a_registered_channel(pager_row: ChannelSpec) -> None:
    catalogue = {"early_reminder": frozenset({"sms", "email", PAGER}),
                 "write_off_notice": frozenset({"email"})}
    policy = parse_policy(POLICY.format(channel=PAGER), "paging.toml",
                          rule_packs=load_rule_packs(), templates=catalogue)
    assert policy.ladders["standard"][0].channels == [PAGER]
    # Without its template the step is refused for that, not for the channel.
    with pytest.raises(PolicyError, match="template 'early_reminder' has no pager version"):
        parse_policy(POLICY.format(channel=PAGER), "paging.toml", rule_packs=load_rule_packs(),
                     templates={**catalogue, "early_reminder": frozenset({"sms", "email"})})
    # A cap may count the new channel, and the unknown-channel message lists it.
    Step(id="x", day=1, stage=Stage.EARLY, kind="message", channels=["sms", PAGER])
    with pytest.raises(PolicyError,
                       match=r"unknown channel 'fax' \(allowed: sms, email, wecom, voice, pager\)"):
        parse_policy(POLICY.format(channel="fax"), "paging.toml", rule_packs=load_rule_packs(),
                     templates=None)


def test_agent_channels_are_no_message_channels() -> None:
    with pytest.raises(PolicyError, match="unknown channel 'call'"):
        parse_policy(POLICY.format(channel="call"), "paging.toml", rule_packs=load_rule_packs(),
                     templates=None)


# ------------------------------------------------------------------- wiring from the table


def test_wiring_wants_one_adapter_per_message_channel(
    pager_row: ChannelSpec, providers: Providers,
) -> None:
    with pytest.raises(LookupError, match="no adapter for channel 'pager'"):
        activities_for(None, providers)


async def test_wiring_registers_each_adapter_under_its_rows_activity(
    pager_row: ChannelSpec, providers: Providers,
) -> None:
    acts = activities_for(None, providers, channels=[PagerAdapter("http://127.0.0.1:9")])
    try:
        names = {getattr(a, "__temporal_activity_definition").name for a in acts}
        assert {"send_sms", "send_email", "send_pager"} <= names
    finally:
        await close_activities(acts)
    unregister(PAGER)
    with pytest.raises(LookupError, match="no row in the channel table for adapter 'pager'"):
        activities_for(None, providers, channels=[PagerAdapter("http://127.0.0.1:9")])


# ------------------------------------------------------------------- the shipped adapters


def _twilio_error(status: int, code: int | None) -> TwilioRestException:
    return TwilioRestException(status, "https://api.twilio.invalid", "refused", code)


async def test_twilio_adapter_classifies_errors_and_addresses() -> None:
    sms = TwilioSms(twilio_client("AC" + "0" * 32, "token", "http://127.0.0.1:9"), "+15005550006")
    try:
        refused = sms.classify(_twilio_error(400, 21211))
        assert isinstance(refused, PermanentSendError) and refused.code == "twilio_21211"
        assert sms.address_unusable("twilio_21211") and sms.address_unusable("twilio_21610")
        region = sms.classify(_twilio_error(400, 21408))
        assert isinstance(region, PermanentSendError) and not sms.address_unusable(region.code)
        assert isinstance(sms.classify(_twilio_error(401, 20003)), TransientSendError)
        assert sms.classify(TimeoutError()) is None  # may have reached Twilio: reconcile
        assert sms.usable("+8613800138000") and not sms.usable("13800138000")
        assert not sms.usable("")
    finally:
        await sms.close()


def test_sendgrid_adapter_classifies_errors_and_addresses() -> None:
    email = SendGridEmail(sendgrid_client("SG.test", "http://127.0.0.1:9"), "c@lender.example")

    def http_error(cls: type[http_errors.HTTPError], code: int,
                   headers: dict[str, str] | None = None) -> http_errors.HTTPError:
        return cls(code, "refused", b"{}", headers or {})

    busy = email.classify(http_error(http_errors.TooManyRequestsError, 429, {"Retry-After": "7"}))
    assert isinstance(busy, TransientSendError) and busy.retry_after == timedelta(seconds=7)
    assert isinstance(email.classify(http_error(http_errors.InternalServerError, 500)),
                      TransientSendError)
    bad = email.classify(http_error(http_errors.BadRequestsError, 400))
    assert isinstance(bad, PermanentSendError) and email.address_unusable(bad.code)
    forbidden = email.classify(http_error(http_errors.ForbiddenError, 403))
    assert isinstance(forbidden, PermanentSendError) and not email.address_unusable(forbidden.code)
    assert email.classify(ConnectionResetError()) is None
    assert email.usable("li@example.com") and not email.usable("li.example.com")


async def test_an_unusable_address_is_refused_without_asking_the_provider(
    pool: asyncpg.Pool, providers: Providers,
) -> None:
    sms = TwilioSms(twilio_client("AC" + "0" * 32, "token", "http://127.0.0.1:9"), "+15005550006")
    inp = SendInput(outbox_key=f"unusable-{uuid.uuid4().hex}", loan_id="L-1", channel="sms",
                    to="not a number", template="early_reminder", locale="en", context={})
    try:
        result = await sms.send(inp, Outbox(pool), LinkBuilder(providers.payment_link_base))
    finally:
        await sms.close()
    assert (result.status, result.address_unusable) == ("failed", True)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE outbox_key = $1",
                               inp.outbox_key) == 0
