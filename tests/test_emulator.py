"""The provider emulator must look like Twilio/SendGrid to the real SDKs, faults included."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from python_http_client.exceptions import (
    BadRequestsError,
    InternalServerError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from infra.emulator import EmulatorClient, ProviderEmulator
from infra.emulator import twilio as twilio_api

ACCOUNT = twilio_api.ACCOUNT_SID
PHONE = "+15555550100"
SENDER = "+15555550199"
EMAIL = "debtor@example.com"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
async def emu() -> AsyncIterator[ProviderEmulator]:
    emulator = ProviderEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture(autouse=True)
def _clean(emu: ProviderEmulator) -> None:
    emu.reset()


@pytest.fixture
async def twilio(emu: ProviderEmulator) -> AsyncIterator[Client]:
    client = Client(ACCOUNT, "secret", http_client=AsyncTwilioHttpClient())
    client.api.base_url = emu.url
    try:
        yield client
    finally:
        await client.http_client.close()


@pytest.fixture
def sendgrid(emu: ProviderEmulator) -> SendGridAPIClient:
    return SendGridAPIClient(api_key="SG.test", host=emu.url)


def basic_auth(user: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, "secret")}


async def send_sms(client: Client, to: str = PHONE, body: str = "Your balance is due"):
    return await client.messages.create_async(
        to=to, from_=SENDER, body=body, status_callback="http://cb.invalid/sms")


def make_mail(to: str = EMAIL, case_id: str = "CASE-1") -> Mail:
    mail = Mail(from_email="collections@agency.test", to_emails=to, subject="Payment reminder",
                plain_text_content="Please pay", html_content="<p>Please pay</p>")
    mail.custom_arg = CustomArg("case_id", case_id)
    return mail


async def send_mail(sg: SendGridAPIClient, mail: Mail | dict | None = None):
    return await asyncio.to_thread(sg.send, mail or make_mail())


# ----- Twilio ----------------------------------------------------------------------------------
async def test_sms_is_stored_and_listable(emu: ProviderEmulator, twilio: Client) -> None:
    before = datetime.now(UTC)
    msg = await send_sms(twilio)

    assert msg.sid.startswith("SM") and len(msg.sid) == 34
    assert (msg.status, msg.to, msg.from_) == ("queued", PHONE, SENDER)
    assert msg.body == "Your balance is due"
    assert msg.account_sid == ACCOUNT and msg.direction == "outbound-api"
    assert msg.date_sent is not None and msg.error_code is None
    [stored] = emu.messages(channel="sms", to=PHONE)
    assert (stored["id"], stored["body"], stored["from"]) == (msg.sid, msg.body, SENDER)
    assert stored["status_callback"] == "http://cb.invalid/sms"

    listed = await twilio.messages.list_async(to=PHONE, date_sent_after=before)
    assert [m.sid for m in listed] == [msg.sid]
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert await twilio.messages.list_async(to=PHONE, date_sent_after=later) == []
    assert await twilio.messages.list_async(to="+15555550111") == []
    fetched = await twilio.messages(msg.sid).fetch_async()
    assert (fetched.sid, fetched.body) == (msg.sid, msg.body)


async def test_sms_list_pages_through_all_results(twilio: Client) -> None:
    sids = {(await send_sms(twilio, body=f"m{i}")).sid for i in range(5)}
    listed = await twilio.messages.list_async(to=PHONE, page_size=2)
    assert {m.sid for m in listed} == sids and len(listed) == 5


async def test_sms_fetch_unknown_is_404(twilio: Client) -> None:
    with pytest.raises(TwilioRestException) as err:
        await twilio.messages("SM" + "f" * 32).fetch_async()
    assert (err.value.status, err.value.code) == (404, 20404)


async def test_sms_requires_matching_basic_auth(emu: ProviderEmulator) -> None:
    url = f"{emu.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    form = {"To": PHONE, "From": SENDER, "Body": "x"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form, headers=basic_auth("ACother")) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 20003
        async with http.post(url, data=form) as resp:
            assert resp.status == 401
    assert emu.messages() == []


async def test_sms_rate_limit_sends_retry_after(emu: ProviderEmulator, twilio: Client) -> None:
    emu.add_fault(PHONE, "rate_limit", channel="sms", retry_after=7)
    with pytest.raises(TwilioRestException) as err:
        await send_sms(twilio)
    assert (err.value.status, err.value.code) == (429, 20429)

    url = f"{emu.url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    async with aiohttp.ClientSession() as http, \
            http.post(url, data={"To": PHONE, "From": SENDER, "Body": "x"},
                      headers=basic_auth(ACCOUNT)) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "7"
        assert await resp.json() == {
            "code": 20429, "message": "Too Many Requests", "status": 429,
            "more_info": "https://www.twilio.com/docs/errors/20429"}
    assert emu.messages() == []
    assert emu.stats()["sms"]["rate_limit"] == 2


async def test_fault_with_times_applies_once(emu: ProviderEmulator, twilio: Client) -> None:
    emu.add_fault("*", "server_error", channel="*", times=1)
    with pytest.raises(TwilioRestException) as err:
        await send_sms(twilio)
    assert err.value.status == 500
    msg = await send_sms(twilio)
    assert [m["id"] for m in emu.messages()] == [msg.sid]
    assert emu.stats()["sms"] == {"server_error": 1, "accepted": 1}


async def test_invalid_number_stores_nothing(emu: ProviderEmulator, twilio: Client) -> None:
    emu.add_fault(PHONE, "invalid_number")
    with pytest.raises(TwilioRestException) as err:
        await send_sms(twilio)
    assert (err.value.status, err.value.code) == (400, 21211)
    assert PHONE not in err.value.msg
    assert emu.messages() == []
    await send_sms(twilio, to="+15555550123")  # other recipients are unaffected
    assert len(emu.messages()) == 1


async def test_slow_sms_is_stored_before_the_answer(emu: ProviderEmulator, twilio: Client) -> None:
    emu.add_fault(PHONE, "slow", channel="sms", delay=0.5, times=1)
    pending = asyncio.create_task(send_sms(twilio))
    for _ in range(50):
        if emu.messages():
            break
        await asyncio.sleep(0.01)
    [stored] = emu.messages(channel="sms")
    assert not pending.done()
    msg = await asyncio.wait_for(pending, timeout=5)
    assert msg.sid == stored["id"]
    assert emu.stats()["sms"]["slow"] == 1


# ----- SendGrid --------------------------------------------------------------------------------
async def test_email_is_stored_and_queryable(emu: ProviderEmulator,
                                             sendgrid: SendGridAPIClient) -> None:
    response = await send_mail(sendgrid)
    assert response.status_code == 202 and response.body == b""
    message_id = response.headers["X-Message-Id"]
    [stored] = emu.messages(channel="email", to=EMAIL)
    assert stored["id"].startswith(message_id)
    assert (stored["subject"], stored["body"], stored["html"]) == (
        "Payment reminder", "Please pay", "<p>Please pay</p>")
    assert stored["custom_args"] == {"case_id": "CASE-1"}
    await send_mail(sendgrid, make_mail(case_id="CASE-2"))

    query = f"unique_args['case_id']=\"CASE-1\" AND to_email=\"{EMAIL}\""
    found = await asyncio.to_thread(
        sendgrid.client.messages.get, query_params={"query": query, "limit": 10})
    [row] = found.to_dict["messages"]
    assert (row["msg_id"], row["to_email"], row["status"]) == (stored["id"], EMAIL, "delivered")
    assert row["unique_args"] == {"case_id": "CASE-1"}
    none = await asyncio.to_thread(sendgrid.client.messages.get,
                                   query_params={"query": "unique_args['case_id']=\"X\""})
    assert none.to_dict["messages"] == []


async def test_email_validation_and_auth(emu: ProviderEmulator) -> None:
    body = make_mail().get()
    body["personalizations"][0]["to"] = [{"email": "nobody"}]  # the Mail helper would choke
    with pytest.raises(BadRequestsError) as err:
        await send_mail(SendGridAPIClient(api_key="SG.test", host=emu.url), body)
    assert err.value.to_dict["errors"][0]["field"] == "personalizations.0.to.0.email"
    with pytest.raises(UnauthorizedError):  # no key configured: the SDK sends "Bearer None"
        await send_mail(SendGridAPIClient(api_key="", host=emu.url))
    async with aiohttp.ClientSession() as http, \
            http.post(f"{emu.url}/v3/mail/send", json=make_mail().get()) as resp:
        assert resp.status == 401 and resp.content_type == "application/json"
    assert emu.messages() == []


async def test_rejected_email(emu: ProviderEmulator, sendgrid: SendGridAPIClient) -> None:
    emu.add_fault(EMAIL.upper(), "rejected", channel="email")
    with pytest.raises(BadRequestsError) as err:
        await send_mail(sendgrid)
    assert err.value.status_code == 400
    assert err.value.to_dict["errors"][0]["message"] == "Does not contain a valid address."
    assert emu.messages() == [] and emu.stats()["email"] == {"rejected": 1}


async def test_email_rate_limit_and_server_error(emu: ProviderEmulator,
                                                 sendgrid: SendGridAPIClient) -> None:
    emu.add_fault(EMAIL, "rate_limit", channel="email", times=1, retry_after=3)
    emu.add_fault(EMAIL, "server_error", channel="email", times=1)
    with pytest.raises(TooManyRequestsError) as err:
        await send_mail(sendgrid)
    assert err.value.headers["Retry-After"] == "3"
    with pytest.raises(InternalServerError):
        await send_mail(sendgrid)
    assert (await send_mail(sendgrid)).status_code == 202
    assert emu.stats()["email"] == {"rate_limit": 1, "server_error": 1, "accepted": 1}


async def test_sms_fault_does_not_touch_email(emu: ProviderEmulator,
                                              sendgrid: SendGridAPIClient) -> None:
    emu.add_fault("*", "server_error", channel="sms")
    assert (await send_mail(sendgrid)).status_code == 202


async def test_logs_carry_no_borrower_data(caplog: pytest.LogCaptureFixture, twilio: Client,
                                           sendgrid: SendGridAPIClient) -> None:
    with caplog.at_level(logging.INFO, logger="infra.emulator"):
        await send_sms(twilio)
        await twilio.messages.list_async(to=PHONE)
        await send_mail(sendgrid)
    text = caplog.text
    assert "Messages.json" in text and "/v3/mail/send" in text
    for secret in (PHONE, EMAIL, "balance", "Please pay", ACCOUNT):
        assert secret not in text


# ----- control API -----------------------------------------------------------------------------
async def test_control_api_over_http(emu: ProviderEmulator, twilio: Client,
                                     sendgrid: SendGridAPIClient) -> None:
    async with EmulatorClient(emu.url) as ctl:
        assert await ctl.health()
        fault_id = await ctl.add_fault(PHONE, "rate_limit", channel="sms", times=1)
        assert fault_id.startswith("FT")
        with pytest.raises(TwilioRestException):
            await send_sms(twilio)
        await send_sms(twilio)
        await send_mail(sendgrid)
        assert [m["channel"] for m in await ctl.messages()] == ["sms", "email"]
        assert [m["to"] for m in await ctl.messages(channel="email")] == [EMAIL]
        assert len(await ctl.messages(to=PHONE)) == 1
        stats = await ctl.stats()
        assert stats["sms"] == {"rate_limit": 1, "accepted": 1} and stats["email"]["accepted"] == 1
        await ctl.add_fault("*", "server_error")
        await ctl.clear_faults()
        await send_sms(twilio)
        await ctl.reset()
        assert await ctl.messages() == [] and await ctl.stats() == {}
        with pytest.raises(aiohttp.ClientResponseError):
            await ctl.add_fault(PHONE, "explode")


async def test_standalone_process_serves_and_exits() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.emulator", "--port", "0", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=5)).decode()
        assert "listening on http://127.0.0.1:" in line
        async with EmulatorClient(line.rsplit(" ", 1)[1].strip()) as ctl:
            assert await ctl.health()
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_added_routes_are_served_with_faults_and_the_log() -> None:
    """A test-only channel: its provider route added before start, its faults and records in the
    emulator's shared log like the shipped providers'."""
    emulator = ProviderEmulator()

    async def send(request: web.Request) -> web.Response:
        to = (await request.json())["to"]
        fault = emulator.take_fault("pager", [to])
        if fault is not None:
            emulator.count("pager", fault.kind)
            return web.json_response({"error": fault.kind}, status=503)
        record = emulator.store("pager", f"PG{len(emulator.messages()) + 1}", to, "desk")
        emulator.count("pager", "accepted")
        return web.json_response({"id": record["id"]}, status=201)

    emulator.add_routes([web.post("/pager/send", send)], channel="pager")
    url = await emulator.start()
    try:
        with pytest.raises(RuntimeError):
            emulator.add_routes([web.get("/late", send)])
        emulator.add_fault("p-1", "server_error", channel="pager", times=1)
        async with aiohttp.ClientSession() as http:
            for expected in (503, 201):
                async with http.post(url + "/pager/send", json={"to": "p-1"}) as resp:
                    assert resp.status == expected
        assert [m["id"] for m in emulator.messages(channel="pager", to="p-1")] == ["PG1"]
        assert emulator.stats()["pager"] == {"server_error": 1, "accepted": 1}
    finally:
        await emulator.stop()


async def test_standalone_process_writes_and_removes_its_url_file(tmp_path: Path) -> None:
    url_file = tmp_path / "emulator.url"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.emulator", "--port", "0", "--url-file", str(url_file),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(30):
            while not url_file.exists():  # noqa: ASYNC110 - another process writes it
                await asyncio.sleep(0.05)
        async with EmulatorClient(url_file.read_text()) as ctl:
            assert await ctl.health()
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        assert not url_file.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
