"""WeCom's callbacks over real HTTP to the running API (issue 17): the emulator verifies the URL and
calls it when a contact deletes the lender, signed and encrypted as WeCom does; after that the
case's next WeCom step is skipped with the rule and falls back to SMS. A staff member deleting
the contact makes WeCom unusable for it. Unsigned, tampered, stale and foreign calls, and a
repeated event, change nothing (more)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database.contacts import ContactActivities
from activities.policies import resolve
from contracts.activity_io import ContactRequest
from contracts.messages import CaseState, Stage
from contracts.policy import Step
from infra import wecom_callback
from infra.emulator import ProviderEmulator
from infra.emulator import twilio as twilio_emulator
from infra.emulator.server import WebhookTargets
from infra.emulator.wecom import CORP_ID, STAFF_USERID, callback_keys
from infra.webhook_keys import local_key_pair
from infra.wecom_callback import CALLBACK_PATH, CallbackKeys
from service.wecom_events import CONTACT_DELETED_RULE, STAFF_DELETED_RULE, contact_key
from tests.api.calls import Api
from tests.helpers import at_local, eventually, make_loan, pinned, start_case
from workflows import addresses

FIRST, SECOND = "wecom-first", "wecom-second"
STEPS = [
    Step(id=FIRST, day=1, hour=10, stage=Stage.EARLY, kind="message", channels=["wecom"],
         template="early_reminder"),
    Step(id=SECOND, day=2, hour=10, stage=Stage.EARLY, kind="message", channels=["wecom"],
         template="early_reminder"),
    Step(id="write-off", day=3, hour=10, stage=Stage.WRITTEN_OFF, kind="write_off",
         template="write_off_notice", notice="collection_ending"),
]


@pytest.fixture(scope="module")
async def hooks(api: Api, emulator: ProviderEmulator, state_dir: Path) -> AsyncIterator[None]:
    """The emulator calls the API's webhooks while this module runs."""
    pair = local_key_pair(state_dir / "api-state")
    emulator.configure_webhooks(WebhookTargets(api.url, twilio_emulator.AUTH_TOKEN,
                                               pair.private_pem, delay_seconds=0.1))
    try:
        yield
    finally:
        await emulator.callbacks_done()
        emulator.configure_webhooks(None)


async def control(emulator: ProviderEmulator, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(emulator.url + "/_emulator/wecom" + path, json=body)
    assert answer.status_code < 300, answer.text
    return answer


async def suppressions(pool: asyncpg.Pool, external_userid: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT channel, kind, rule FROM contact_suppressions "
                            "WHERE contact_key = $1 AND lifted_at IS NULL ORDER BY kind",
                            contact_key(external_userid))
    return [(r["channel"], r["kind"], r["rule"]) for r in rows]


async def wecom_events(pool: asyncpg.Pool, external_userid: str) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM provider_events WHERE provider = 'wecom' "
                            "AND contact_key = $1 ORDER BY id", contact_key(external_userid))
    return [r["kind"] for r in rows]


def a_contact() -> str:
    return f"wm{uuid.uuid4().hex}"


def event_xml(external_userid: str, change_type: str = "del_follow_user",
              to: str = CORP_ID) -> bytes:
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[sys]]>"
            f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]>"
            "</MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA["
            f"{change_type}]]></ChangeType><UserID><![CDATA[{STAFF_USERID}]]></UserID>"
            f"<ExternalUserID><![CDATA[{external_userid}]]></ExternalUserID></xml>").encode()


async def call_back(api: Api, message: bytes, *, keys: CallbackKeys | None = None,
                    timestamp: int | None = None, signature: str | None = None,
                    encrypted: str | None = None, body: str | None = None) -> httpx.Response:
    """POST a callback as WeCom would, or with one part of it changed."""
    keys = keys or callback_keys()
    stamp, nonce = str(timestamp or int(time.time())), "1372623149"
    sealed = wecom_callback.encrypt(keys, message)
    query = {"msg_signature": signature or wecom_callback.signature(
        keys.token, stamp, nonce, sealed), "timestamp": stamp, "nonce": nonce}
    sent = body or (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA["
                    f"{encrypted or sealed}]]></Encrypt><AgentID>1</AgentID></xml>")
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{api.url}{CALLBACK_PATH}?{urlencode(query)}", content=sent,
                               headers={"Content-Type": "text/xml"})


async def test_the_emulator_verifies_the_callback_url(api: Api, emulator: ProviderEmulator,
                                                       hooks: None) -> None:
    answer = await control(emulator, "/verify_url", {})
    assert answer.json() == {"verified": True}
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        forged = await http.get(CALLBACK_PATH, params={
            "msg_signature": "0" * 40, "timestamp": str(int(time.time())), "nonce": "1",
            "echostr": wecom_callback.encrypt(callback_keys(), b"hello")})
    assert (forged.status_code, forged.json()["kind"]) == (403, "webhook_signature")


async def test_a_contact_deleting_the_lender_stops_wecom_and_the_next_step_falls_back_to_sms(
    api: Api, hooks: None, ts_env: WorkflowEnvironment, ts_worker: Worker,
    emulator: ProviderEmulator, pool: asyncpg.Pool, loan_id: str,
) -> None:
    _, today = await at_local(ts_env, 9)
    userid = a_contact()
    loan = make_loan(loan_id, due=today - timedelta(days=1), wecom_external_userid=userid)
    handle = await start_case(ts_env.client, loan, ts_worker.task_queue,
                              pinned(loan).model_copy(update={"steps": STEPS}))
    await ts_env.sleep(timedelta(hours=1, minutes=1))
    [task] = await eventually(lambda: _tasks(emulator, userid), lambda t: len(t) == 1)
    await control(emulator, "/confirm", {"msgid": task["msgid"]})

    # The borrower deletes the lender's staff member; WeCom delivers the event twice.
    await control(emulator, "/delete_contact", {"external_userid": userid, "repeat": 2})
    await emulator.callbacks_done()
    answers = [(c["change_type"], c["status"], c["answer"]) for c in emulator.wecom.callbacks]
    assert answers[-2:] == [("del_follow_user", 200, "success")] * 2
    assert await suppressions(pool, userid) == [("wecom", "opt_out", CONTACT_DELETED_RULE)]
    assert await wecom_events(pool, userid) == ["del_follow_user"]  # once
    noted = await pool.fetch("SELECT kind, actor, rule FROM events WHERE loan_id = $1 "
                             "AND kind LIKE 'wecom_%'", loan.loan_id)
    assert [tuple(r) for r in noted] == [("wecom_opt_out", "borrower", CONTACT_DELETED_RULE)]

    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.state == CaseState.WRITTEN_OFF
    rows = await pool.fetch("SELECT step_id, channel, decision, rule, idempotency_key "
                            "FROM contacts WHERE loan_id = $1 AND step_id = ANY($2::text[]) "
                            "ORDER BY occurred_at, idempotency_key",
                            loan.loan_id, [FIRST, SECOND])
    got = [(r["step_id"], r["channel"], r["decision"], r["rule"]) for r in rows]
    assert got[0][:3] == (FIRST, "wecom", "sent")
    assert (SECOND, "wecom", "skipped", CONTACT_DELETED_RULE) in got
    [sms] = [r for r in rows if r["channel"] == "sms"]
    assert (sms["step_id"], sms["decision"]) == (SECOND, "sent")
    assert sms["idempotency_key"].endswith(f"/{SECOND}-fallback/sms")
    assert len(await _tasks(emulator, userid)) == 1  # the second step made no WeCom task
    assert [m["to"] for m in emulator.messages(channel="sms", to=loan.phone)] == [loan.phone]


async def test_a_staff_member_deleting_the_contact_makes_wecom_unusable_for_it(
    api: Api, hooks: None, emulator: ProviderEmulator, pool: asyncpg.Pool,
) -> None:
    userid = a_contact()
    await control(emulator, "/delete_contact", {"external_userid": userid, "by": "staff"})
    await emulator.callbacks_done()
    assert await suppressions(pool, userid) == [("wecom", "undeliverable", STAFF_DELETED_RULE)]
    # On any loan of that external contact, and only on WeCom.
    reserve = ContactActivities(pool).reserve_contact
    refused = await reserve(_request(userid, "wecom"))
    assert (refused.allowed, refused.rule, refused.suppressed) == (
        False, STAFF_DELETED_RULE, True)
    assert (await reserve(_request(userid, "sms"))).allowed


async def test_unsigned_tampered_stale_and_foreign_callbacks_change_nothing(
    api: Api, pool: asyncpg.Pool,
) -> None:
    userid = a_contact()
    message = event_xml(userid)
    keys = callback_keys()
    other_corp = CallbackKeys(keys.token, keys.encoding_aes_key, "ww-another-corp")
    other_key = CallbackKeys(keys.token, "A" * 43, CORP_ID)
    doctype = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaa">]>'
               "<xml><Encrypt>&a;</Encrypt></xml>")
    swapped = wecom_callback.encrypt(keys, event_xml(a_contact()))  # signed over another Encrypt
    async with httpx.AsyncClient(timeout=30) as http:
        unsigned = await http.post(api.url + CALLBACK_PATH, content=b"<xml/>")
    answers = [
        unsigned,
        await call_back(api, message, signature="0" * 40),
        await call_back(api, message, encrypted=swapped),
        await call_back(api, message, timestamp=int(time.time()) - 301),
        await call_back(api, message, keys=other_corp),
        await call_back(api, event_xml(userid, to="ww-another-corp")),
        await call_back(api, message, body=doctype),
    ]
    assert [(a.status_code, a.json()["kind"]) for a in answers] == [
        (401, "webhook_unsigned"), (403, "webhook_signature"), (403, "webhook_signature"),
        (403, "webhook_stale"), (403, "webhook_receiver"), (403, "webhook_receiver"),
        (400, "webhook_body")]
    # Signed with our token but sealed under another key: it does not open as ours.
    garbled = await call_back(api, message, keys=other_key)
    assert garbled.json()["kind"] in ("webhook_body", "webhook_receiver")
    assert await suppressions(pool, userid) == []
    assert await wecom_events(pool, userid) == []
    # The same event, as WeCom signs it, is applied; an event we do not act on is acknowledged.
    assert (await call_back(api, message)).text == "success"
    added = event_xml(userid).replace(b"del_follow_user", b"add_external_contact")
    assert (await call_back(api, added)).text == "success"
    assert await wecom_events(pool, userid) == ["del_follow_user"]


def _request(userid: str, channel: str) -> ContactRequest:
    loan_id = f"W{uuid.uuid4().hex[:10]}"
    loan = make_loan(loan_id, date(2026, 1, 1), wecom_external_userid=userid)
    return ContactRequest(
        key=f"collection-{loan_id}/step/{channel}", loan_id=loan_id,
        borrower_key=addresses.borrower_key(loan), contact_key=addresses.contact_key(loan, channel),
        channel=channel, step_id="early", stage="early", template="early_reminder",
        at=datetime(2026, 1, 5, 4, tzinfo=UTC), timezone=loan.timezone,
        rule_pack=resolve(loan).rule_pack)


async def _tasks(emulator: ProviderEmulator, external_userid: str) -> list[dict[str, Any]]:
    return [t for t in emulator.wecom.tasks() if t["external_userid"] == external_userid]
