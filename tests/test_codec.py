"""Payload encryption, codec server and log masking."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import stat
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    import pytest_asyncio
    from aiohttp.test_utils import TestClient, TestServer
    from google.protobuf import json_format
    from google.protobuf.message import Message
    from temporalio.api.common.v1 import Payload, Payloads
    from temporalio.client import Client, WorkflowHandle
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from infra import log_masking
    from infra.codec import (
        ENCODING_ENCRYPTED,
        ENV_KEYS,
        EncryptionCodec,
        PayloadDecryptionError,
        UnknownEncryptionKeyError,
        codec_from_env,
        data_converter,
        generate_key,
        load_keys_from_env,
    )
    from infra.codec_server import build_app

PHONE = "+8613800138000"
EMAIL = "li.lei@example.com"
NAME = "Li Lei"
UI_ORIGIN = "http://localhost:8233"


# --------------------------------------------------------------------------- workflow


@dataclass
class Contact:
    name: str
    phone: str
    email: str
    amount_due: Decimal


@workflow.defn
class EchoWorkflow:
    def __init__(self) -> None:
        self._contact: Contact | None = None
        self._note: str | None = None

    @workflow.run
    async def run(self, contact: Contact) -> Contact:
        self._contact = contact
        await workflow.wait_condition(lambda: self._note is not None)
        return dataclasses.replace(contact, name=f"{contact.name} ({self._note})")

    @workflow.signal
    def add_note(self, note: str) -> None:
        self._note = note

    @workflow.query
    def contact(self) -> Contact | None:
        return self._contact


# --------------------------------------------------------------------------- helpers


def _keys(*kids: str) -> dict[str, bytes]:
    return {k: os.urandom(32) for k in kids}


def _env_value(keys: dict[str, bytes], urlsafe: bool = True) -> str:
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return ",".join(f"{k}:{enc(v).decode()}" for k, v in keys.items())


def _plain_payload(value: object) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


def _all_payloads(msg: Message) -> list[Payload]:
    """Every ``Payload`` message nested anywhere in ``msg``."""
    found: list[Payload] = []
    if isinstance(msg, Payload):
        return [msg]
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif isinstance(value, Message):
            values = [value]
        else:  # repeated message field
            values = list(value)
        for v in values:
            if isinstance(v, Message):
                found.extend(_all_payloads(v))
    return found


# --------------------------------------------------------------------------- codec unit tests


async def test_round_trip_metadata_and_no_plaintext() -> None:
    codec = EncryptionCodec(_keys("k1"), "k1")
    original = _plain_payload(Contact(NAME, PHONE, EMAIL, Decimal("1234.56")))
    assert PHONE.encode() in original.data  # sanity: plaintext is there before encoding

    [enc] = await codec.encode([original])
    assert enc.metadata["encoding"] == ENCODING_ENCRYPTED
    assert enc.metadata["encryption-key-id"] == b"k1"
    blob = enc.SerializeToString()
    for s in (PHONE, EMAIL, NAME, "1234.56", "json/plain"):
        assert s.encode() not in blob
    # fresh nonce every time
    [enc2] = await codec.encode([original])
    assert enc2.data != enc.data

    [dec] = await codec.decode([enc])
    assert dec == original
    conv = data_converter(codec)
    value = (await conv.decode(await conv.encode([Contact(NAME, PHONE, EMAIL, Decimal("1.10"))]), [
            Contact]))[0]
    assert value == Contact(NAME, PHONE, EMAIL, Decimal("1.10"))


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(_keys("k1"), "k1")
    plain = _plain_payload({"a": 1})
    assert await codec.decode([plain]) == [plain]


async def test_rotation_old_data_still_decodes() -> None:
    old = _keys("old")
    old_codec = EncryptionCodec(old, "old")
    [enc_old] = await old_codec.encode([_plain_payload(EMAIL)])

    new_keys = {**_keys("new"), **old}  # new key first => active
    env = {ENV_KEYS: _env_value(new_keys)}
    loaded = load_keys_from_env(env)
    assert loaded is not None and list(loaded) == ["new", "old"]
    rotated = codec_from_env(env)
    assert rotated is not None and rotated.active_key_id == "new"

    [dec] = await rotated.decode([enc_old])
    assert dec == _plain_payload(EMAIL)
    [enc_new] = await rotated.encode([_plain_payload(EMAIL)])
    assert enc_new.metadata["encryption-key-id"] == b"new"
    # the old-only codec cannot read the new data, and says which key is missing
    with pytest.raises(UnknownEncryptionKeyError, match="'new'"):
        await old_codec.decode([enc_new])


async def test_unknown_key_and_tampering_errors_name_kid_not_content() -> None:
    codec = EncryptionCodec(_keys("k1"), "k1")
    [enc] = await codec.encode([_plain_payload(PHONE)])
    other = EncryptionCodec(_keys("k2"), "k2")
    with pytest.raises(UnknownEncryptionKeyError) as ei:
        await other.decode([enc])
    assert "k1" in str(ei.value) and PHONE not in str(ei.value)

    # same kid, different key material -> authentication failure naming the kid
    impostor = EncryptionCodec(_keys("k1"), "k1")
    with pytest.raises(PayloadDecryptionError, match="'k1'"):
        await impostor.decode([enc])


async def test_relabelled_key_id_fails_authentication() -> None:
    key = os.urandom(32)
    codec = EncryptionCodec({"a": key, "b": key}, "a")
    [enc] = await codec.encode([_plain_payload(NAME)])
    enc.metadata["encryption-key-id"] = b"b"
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([enc])


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("k1:" + base64.b64encode(b"s3cr3t-short-key").decode(), "32 bytes"),
        ("k1:!!!not*base64@@@" + "A" * 20, "base64"),
        (":" + base64.b64encode(b"K" * 32).decode(), "empty key id"),
        (base64.b64encode(b"Q" * 32).decode(), "missing ':'"),
        ("k1:" + base64.b64encode(b"D" * 32).decode() + ",k1:" + base64.b64encode(
                b"E" * 32).decode(), "duplicate"),
        ("bad kid!:" + base64.b64encode(b"F" * 32).decode(), "key id"),
    ],
)
def test_malformed_env_values(value: str, fragment: str) -> None:
    with pytest.raises(ValueError) as ei:
        load_keys_from_env({ENV_KEYS: value})
    msg = str(ei.value)
    assert fragment in msg
    secret_part = value.split(":", 1)[-1]
    for chunk in secret_part.split(","):
        chunk = chunk.split(":")[-1]
        assert chunk[:12] not in msg
    assert "s3cr3t" not in msg
    assert ei.value.__cause__ is None


def test_env_parsing_variants() -> None:
    assert load_keys_from_env({}) is None
    assert load_keys_from_env({ENV_KEYS: "  "}) is None
    keys = _keys("a", "b")
    # standard base64 (with + and /) and url-safe, padding optional, whitespace tolerated
    std = load_keys_from_env({ENV_KEYS: _env_value(keys, urlsafe=False)})
    url = load_keys_from_env({ENV_KEYS: " " + _env_value(keys).replace("=", "") + " , "})
    assert std == url == keys
    assert codec_from_env({}) is None


def test_generate_key_format() -> None:
    entry = generate_key()
    kid, _, _b64 = entry.partition(":")
    assert kid.startswith("k") and len(kid) == 1 + 8 + 6
    assert load_keys_from_env({ENV_KEYS: entry}) is not None
    assert generate_key() != entry


def test_codec_requires_valid_keys() -> None:
    with pytest.raises(ValueError):
        EncryptionCodec({}, "x")
    with pytest.raises(ValueError):
        EncryptionCodec({"a": b"short"}, "a")
    with pytest.raises(ValueError):
        EncryptionCodec(_keys("a"), "b")
    assert "key_ids" in repr(EncryptionCodec(_keys("a"), "a"))


def test_data_converter_uses_pydantic_with_shared_adapters() -> None:
    from decimal import Decimal

    from infra.codec import BASE_CONVERTER, CollectionsPayloadConverter

    assert data_converter(None) is BASE_CONVERTER
    codec = EncryptionCodec(_keys("a"), "a")
    conv = data_converter(codec)
    assert conv.payload_codec is codec
    assert conv.payload_converter_class is CollectionsPayloadConverter
    # Decimal survives as an exact string, and two converters (two workflow instances) share
    # one adapter per type.
    one, two = CollectionsPayloadConverter(), CollectionsPayloadConverter()
    payload = one.to_payloads([Decimal("1250.10")])[0]
    assert b'"1250.10"' in payload.data
    assert two.from_payloads([payload], [Decimal])[0] == Decimal("1250.10")
    json_one = next(c for c in one.converters.values() if hasattr(c, "_type_adapter"))
    json_two = next(c for c in two.converters.values() if hasattr(c, "_type_adapter"))
    assert json_one._type_adapter is json_two._type_adapter


async def test_dev_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "dev-encryption-key"
    c1 = codec_from_env({}, dev_key_file=key_file)
    assert c1 is not None
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    c2 = codec_from_env({}, dev_key_file=key_file)
    assert c2 is not None and c2.active_key_id == c1.active_key_id
    [enc] = await c1.encode([_plain_payload(PHONE)])
    assert await c2.decode([enc]) == [_plain_payload(PHONE)]
    # the environment wins over the dev key file
    env_keys = _keys("envkey")
    c3 = codec_from_env({ENV_KEYS: _env_value(env_keys)}, dev_key_file=key_file)
    assert c3 is not None and c3.active_key_id == "envkey"


# --------------------------------------------------------------------------- real Temporal run


@pytest_asyncio.fixture(scope="module")
async def env():
    server = Path(sys.executable).parent / "temporal-test-server"
    if not server.exists():
        pytest.skip(f"temporal-test-server not found at {server}")
    e = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(server))
    try:
        yield e
    finally:
        await e.shutdown()


async def _run_echo(env: WorkflowEnvironment, client: Client,
                    ) -> tuple[Contact, Contact | None, WorkflowHandle[EchoWorkflow, Contact]]:
    task_queue = f"codec-{uuid.uuid4()}"
    contact = Contact(NAME, PHONE, EMAIL, Decimal("1234.56"))
    async with Worker(client, task_queue=task_queue, workflows=[EchoWorkflow]):
        handle = await client.start_workflow(
            EchoWorkflow.run,
            contact,
            id=f"echo-{uuid.uuid4()}",  # ids are NOT encrypted: never put PII in them
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=1),
        )
        queried = None
        for _ in range(100):  # wait for the first workflow task to record the input
            queried = await handle.query(EchoWorkflow.contact)
            if queried is not None:
                break
            await asyncio.sleep(0.05)
        await handle.signal(EchoWorkflow.add_note, f"called {PHONE}")
        result = await handle.result()
    return result, queried, handle


async def test_history_is_encrypted_on_the_server(env: WorkflowEnvironment) -> None:
    codec = EncryptionCodec(_keys("kwf"), "kwf")
    conf = env.client.config()
    conf["data_converter"] = data_converter(codec)
    codec_client = Client(**conf)

    result, queried, handle = await _run_echo(env, codec_client)
    assert queried == Contact(NAME, PHONE, EMAIL, Decimal("1234.56"))
    assert result == Contact(f"{NAME} (called {PHONE})", PHONE, EMAIL, Decimal("1234.56"))

    # Raw history seen by a client WITHOUT the codec (what the server stores).
    plain_client = Client(env.client.service_client, namespace=env.client.namespace)
    raw = await plain_client.get_workflow_handle(handle.id).fetch_history()
    as_json = raw.to_json()
    as_bytes = b"".join(e.SerializeToString() for e in raw.events)
    for secret in (PHONE, EMAIL, NAME, "1234.56"):
        assert secret not in as_json
        assert secret.encode() not in as_bytes
        assert base64.b64encode(secret.encode()).decode()[:12] not in as_json
    payloads = [p for e in raw.events for p in _all_payloads(e)]
    assert len(payloads) >= 3  # input, signal, result
    assert all(p.metadata["encoding"] == ENCODING_ENCRYPTED for p in payloads)
    assert {p.metadata["encryption-key-id"] for p in payloads} == {b"kwf"}

    # ... while the codec client still reads the values back from history.
    decoded_result = await codec_client.get_workflow_handle(handle.id, result_type=Contact).result()
    assert decoded_result.phone == PHONE and decoded_result.email == EMAIL
    decrypted = b"".join(p.data for p in await codec.decode(payloads))
    assert PHONE.encode() in decrypted and EMAIL.encode() in decrypted and NAME.encode(
        ) in decrypted


async def test_history_check_detects_plaintext_control(env: WorkflowEnvironment) -> None:
    """Control: without the codec the very same check finds the PII (so the test above means
    something)."""
    conf = env.client.config()
    conf["data_converter"] = data_converter(None)
    client = Client(**conf)
    _, _, handle = await _run_echo(env, client)
    raw = await client.get_workflow_handle(handle.id).fetch_history()
    as_bytes = b"".join(e.SerializeToString() for e in raw.events)
    assert PHONE.encode() in as_bytes and EMAIL.encode() in as_bytes


# --------------------------------------------------------------------------- codec server


TOKEN = "test-token-" + "x" * 20


@pytest_asyncio.fixture
async def codec_client_http():
    codec = EncryptionCodec(_keys("ksrv"), "ksrv")
    app = build_app(codec, TOKEN, [UI_ORIGIN])
    async with TestClient(TestServer(app)) as client:
        yield client


def _payloads_json(*values: object) -> str:
    return json_format.MessageToJson(Payloads(payloads=[_plain_payload(v) for v in values]))


async def test_codec_server_round_trip(codec_client_http: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = _payloads_json(PHONE, {"email": EMAIL})
    r = await codec_client_http.post("/encode", data=body, headers=auth)
    assert r.status == 200, await r.text()
    encoded_text = await r.text()
    for s in (PHONE, EMAIL):
        assert s not in encoded_text
        assert base64.b64encode(s.encode()).decode()[:12] not in encoded_text
    encoded = json_format.Parse(encoded_text, Payloads())
    assert all(p.metadata["encoding"] == ENCODING_ENCRYPTED for p in encoded.payloads)

    r = await codec_client_http.post(
        "/decode", data=encoded_text, headers={**auth, "Origin": UI_ORIGIN,
                "X-Namespace": "default"}
    )
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    decoded = json_format.Parse(await r.text(), Payloads())
    assert decoded == json_format.Parse(body, Payloads())

    # token in the path (for a Web UI that cannot send a header), any mount prefix
    r = await codec_client_http.post(
        f"/t/{TOKEN}/decode", data=encoded_text, headers={"Content-Type": "application/json"}
    )
    assert r.status == 200


async def test_codec_server_requires_token(codec_client_http: TestClient) -> None:
    body = _payloads_json(PHONE)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
    ):
        r = await codec_client_http.post(
            "/encode", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert r.status == 401
        assert PHONE not in await r.text()
    r = await codec_client_http.post("/t/wrong/decode", data=body, headers={
            "Content-Type": "application/json"})
    assert r.status == 401
    # bad body with a good token
    r = await codec_client_http.post(
        "/decode", data="nope", headers={"Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/json"}
    )
    assert r.status == 400


async def test_codec_server_unknown_key_is_400_naming_kid(codec_client_http: TestClient) -> None:
    foreign = EncryptionCodec(_keys("kforeign"), "kforeign")
    enc = await foreign.encode([_plain_payload(PHONE)])
    r = await codec_client_http.post(
        "/decode",
        data=json_format.MessageToJson(Payloads(payloads=enc)),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert r.status == 400
    text = await r.text()
    assert "kforeign" in text and PHONE not in text


async def test_codec_server_cors_preflight(codec_client_http: TestClient) -> None:
    r = await codec_client_http.options(
        "/decode",
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert r.status in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    for h in ("content-type", "x-namespace", "authorization"):
        assert h in allowed
    # a foreign origin gets no CORS grant
    r = await codec_client_http.options("/decode", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_codec_server_insecure_dev_mode() -> None:
    app = build_app(EncryptionCodec(_keys("k"), "k"), None, [UI_ORIGIN])
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/encode", data=_payloads_json(1), headers={
                "Content-Type": "application/json"})
        assert r.status == 200


def test_codec_server_refuses_to_start_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra import codec_server

    monkeypatch.setenv(ENV_KEYS, generate_key())
    monkeypatch.delenv("COLLECTIONS_CODEC_TOKEN", raising=False)
    monkeypatch.setattr(codec_server.web, "run_app", lambda *a, **k: pytest.fail("must not start"))
    with pytest.raises(SystemExit) as ei:
        codec_server.main(["--port", "0"])
    assert "COLLECTIONS_CODEC_TOKEN" in str(ei.value)

    started = {}
    monkeypatch.setattr(codec_server.web, "run_app", lambda app, **k: started.update(k))
    codec_server.main(["--port", "0", "--insecure-dev"])
    assert started["port"] == 0 and started["host"] == "127.0.0.1"


# --------------------------------------------------------------------------- log masking


def test_mask_text() -> None:
    s = (f"call {PHONE} or +86 138-0013-8000, mail {EMAIL}, acct 6222020200112233445, "
         f"{NAME} owes 12.50")
    out = log_masking.mask_text(s, [NAME])
    for secret in (PHONE, "+86 138-0013-8000", EMAIL, "6222020200112233445", NAME):
        assert secret not in out
    assert "owes 12.50" in out and log_masking.PHONE_MASK in out and log_masking.EMAIL_MASK in out
    assert log_masking.mask_text("case 1234567 day 3") == "case 1234567 day 3"


def test_log_records_are_masked() -> None:
    logger = logging.getLogger("tests.codec.masking")
    logger.propagate = False
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    flt = log_masking.install(logger)
    try:
        assert log_masking.install(logger) is flt  # idempotent
        assert handler.filters.count(flt) == 1 and logger.filters.count(flt) == 1
        flt.add_secret(NAME)
        logger.info("reminder to %s at %s / %s", "li lei", PHONE, EMAIL)
        try:
            raise RuntimeError(f"sms to {PHONE} failed")
        except RuntimeError:
            logger.exception("delivery failed for %s", NAME)
    finally:
        log_masking.uninstall(logger)
        flt.remove_secret(NAME)
        logger.removeHandler(handler)
    text = "\n".join(lines)
    assert len(lines) == 2
    for secret in (PHONE, EMAIL, NAME, "li lei"):
        assert secret not in text
    assert "reminder to <redacted> at <phone> / <email>" in lines[0]
    assert "RuntimeError" in lines[1]


def test_log_masking_with_caplog(caplog: pytest.LogCaptureFixture) -> None:
    flt = log_masking.install()
    caplog.handler.addFilter(flt)  # caplog's handler may be attached after install()
    try:
        flt.add_secret("Han Meimei")
        with caplog.at_level(logging.INFO):
            logging.getLogger("activities.sms").info("to Han Meimei %s %s", PHONE, EMAIL)
    finally:
        caplog.handler.removeFilter(flt)
        log_masking.uninstall()
        flt.remove_secret("Han Meimei")
    assert caplog.messages == ["to <redacted> <phone> <email>"]
