"""Payload encryption for everything the orchestrator sends through Temporal.

Borrower names, phone numbers, e-mail addresses and amounts travel through
workflow inputs, signals, queries, activity arguments and results.  Temporal
stores all of those in its event history, so they are encrypted client-side
with :class:`EncryptionCodec` (AES-256-GCM) before they ever leave the process.

Wire format of an encrypted payload (compatible in spirit with Temporal's
``samples-python/encryption`` sample)::

    metadata["encoding"]          = b"binary/encrypted"
    metadata["encryption-key-id"] = b"<kid>"
    data                          = 12-byte random nonce || AES-GCM(ciphertext + tag)

The plaintext is the serialized original ``Payload`` proto (so its own
metadata such as ``encoding: json/plain`` is encrypted as well).  The key id
is bound as additional authenticated data, so a payload cannot be re-labelled
with another key id without the decryption failing.

Keys
----
``COLLECTIONS_ENCRYPTION_KEYS`` holds comma-separated ``kid:base64key`` entries
(32-byte keys, standard or URL-safe base64, padding optional).  The FIRST entry
is the active key used for encoding; every entry can decode.  To rotate: put a
new key first, keep the old ones for as long as histories encrypted with them
must remain readable.  Generate an entry with::

    python -c "from infra.codec import generate_key; print(generate_key())"

What is NOT encrypted by a payload codec: workflow/activity ids, workflow
types, task queues, search attributes, and failure messages/stack traces
(unless a failure converter with encoded attributes is used).  Never put PII
into those.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import functools
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)

__all__ = [
    "ENCODING_ENCRYPTED",
    "ENV_KEYS",
    "KEY_SIZE",
    "METADATA_ENCODING",
    "METADATA_KEY_ID",
    "NONCE_SIZE",
    "CodecError",
    "EncryptionCodec",
    "PayloadDecryptionError",
    "UnknownEncryptionKeyError",
    "codec_from_env",
    "data_converter",
    "generate_key",
    "load_keys_from_env",
    "parse_keys",
]

log = logging.getLogger(__name__)

ENV_KEYS = "COLLECTIONS_ENCRYPTION_KEYS"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"
ENCODING_ENCRYPTED = b"binary/encrypted"
KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96-bit GCM nonce
_AAD_PREFIX = b"collections-temporal-payload:v1:"
_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CodecError(Exception):
    """Base class for codec failures.  Messages never contain payload content or keys."""


class UnknownEncryptionKeyError(CodecError, KeyError):
    """A payload names an encryption key id this process does not hold."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id

    def __str__(self) -> str:  # KeyError would repr() the argument
        return (
            f"payload is encrypted with unknown encryption key id {self.key_id!r}; "
            f"add that key to {ENV_KEYS} (after the active key) to decode it"
        )


class PayloadDecryptionError(CodecError, ValueError):
    """The payload could not be authenticated/decrypted with the named key."""


# --------------------------------------------------------------------------- keys


def _decode_b64(text: str) -> bytes:
    """Decode standard or URL-safe base64, padding optional.  Raises ValueError."""
    s = "".join(text.split())
    if not s:
        raise ValueError("empty")
    s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


def _check_kid(kid: str, where: str) -> None:
    if not kid:
        raise ValueError(f"{where}: empty key id (expected 'kid:base64key')")
    if not _KID_RE.match(kid):
        raise ValueError(
            f"{where}: key id must be 1-64 characters of [A-Za-z0-9._-]"
        )


def parse_keys(value: str, *, source: str = ENV_KEYS) -> dict[str, bytes]:
    """Parse ``kid:base64key[,kid:base64key...]`` (commas or newlines separate).

    Order is preserved: the first key is the active (encoding) key.  Error
    messages name the entry position and key id but never the key material.
    """
    entries = [e.strip() for e in re.split(r"[,\n]", value)]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise ValueError(f"{source}: no keys given (expected 'kid:base64key[,...]')")
    keys: dict[str, bytes] = {}
    for i, entry in enumerate(entries, start=1):
        where = f"{source} entry #{i}"
        kid, sep, b64 = entry.partition(":")
        if not sep:
            # Do not echo the entry: it may well be a bare key.
            raise ValueError(f"{where}: expected 'kid:base64key' (missing ':')")
        kid = kid.strip()
        _check_kid(kid, where)
        where = f"{where} (key id {kid!r})"
        if kid in keys:
            raise ValueError(f"{where}: duplicate key id")
        try:
            key = _decode_b64(b64)
        except ValueError:
            raise ValueError(f"{where}: key is not valid base64") from None
        if len(key) != KEY_SIZE:
            raise ValueError(
                f"{where}: key must decode to {KEY_SIZE} bytes (AES-256), got {len(key)}"
            )
        keys[kid] = key
    return keys


def load_keys_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, bytes] | None:
    """Keys from ``COLLECTIONS_ENCRYPTION_KEYS``; ``None`` when unset or blank.

    Raises ``ValueError`` (without key material in the message) when malformed.
    The returned dict is ordered; its first key is the active one.
    """
    value = environ.get(ENV_KEYS)
    if value is None or not value.strip():
        return None
    return parse_keys(value, source=ENV_KEYS)


def generate_key() -> str:
    """A fresh ``kid:base64key`` entry, e.g. ``k20250101a1b2c3:<44 chars>``."""
    kid = "k" + _dt.datetime.now(_dt.UTC).strftime("%Y%m%d") + secrets.token_hex(3)
    key = base64.urlsafe_b64encode(secrets.token_bytes(KEY_SIZE)).decode("ascii")
    return f"{kid}:{key}"


# --------------------------------------------------------------------------- codec


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec with key ids for rotation."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        for kid, key in keys.items():
            _check_kid(kid, "EncryptionCodec")
            if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
                raise ValueError(
                    f"EncryptionCodec: key {kid!r} must be {KEY_SIZE} bytes (AES-256)"
                )
            self._ciphers[kid] = AESGCM(bytes(key))
        if active_key_id not in self._ciphers:
            raise ValueError(f"EncryptionCodec: active key id {active_key_id!r} not among keys")
        self._active_key_id = active_key_id
        self._active_kid_bytes = active_key_id.encode("ascii")

    @property
    def active_key_id(self) -> str:
        return self._active_key_id

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def __repr__(self) -> str:
        return f"EncryptionCodec(active_key_id={self._active_key_id!r}, key_ids={self.key_ids!r})"

    @staticmethod
    def _aad(kid: bytes) -> bytes:
        return _AAD_PREFIX + kid

    def encrypt_payload(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_SIZE)
        ct = self._ciphers[self._active_key_id].encrypt(
            nonce, payload.SerializeToString(), self._aad(self._active_kid_bytes)
        )
        return Payload(
            metadata={
                METADATA_ENCODING: ENCODING_ENCRYPTED,
                METADATA_KEY_ID: self._active_kid_bytes,
            },
            data=nonce + ct,
        )

    def decrypt_payload(self, payload: Payload) -> Payload:
        if payload.metadata.get(METADATA_ENCODING) != ENCODING_ENCRYPTED:
            return payload
        raw_kid = payload.metadata.get(METADATA_KEY_ID)
        if raw_kid is None:
            raise PayloadDecryptionError(
                f"encrypted payload has no {METADATA_KEY_ID!r} metadata"
            )
        kid = raw_kid.decode("utf-8", errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownEncryptionKeyError(kid)
        data = payload.data
        if len(data) < NONCE_SIZE + 16:
            raise PayloadDecryptionError(
                f"encrypted payload (key id {kid!r}) is too short to be valid"
            )
        try:
            plain = cipher.decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], self._aad(raw_kid))
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload failed authentication with key id {kid!r} "
                "(wrong key material or tampered data)"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt_payload(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt_payload(p) for p in payloads]


# --------------------------------------------------------------------------- wiring


# One TypeAdapter per type for the whole process. The SDK builds a payload converter for every
# workflow instance, and pydantic's converter caches adapters per converter, so each case rebuilt
# the schema of its whole state (~8 ms and ~150 KiB per cached case, measured in bench/).
_shared_type_adapter = functools.lru_cache(maxsize=1024)(TypeAdapter)


class SharedAdapterJSONConverter(PydanticJSONPlainPayloadConverter):
    def __init__(self) -> None:
        super().__init__()
        self._type_adapter = _shared_type_adapter

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._type_adapter = _shared_type_adapter


class CollectionsPayloadConverter(CompositePayloadConverter):
    """Pydantic's JSON conversion (Decimal, date, dataclasses, models) with shared adapters."""

    def __init__(self) -> None:
        shared = SharedAdapterJSONConverter()
        super().__init__(*(
            shared if isinstance(c, JSONPlainPayloadConverter) else c
            for c in DefaultPayloadConverter.default_encoding_payload_converters
        ))


BASE_CONVERTER = DataConverter(payload_converter_class=CollectionsPayloadConverter)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The project's data converter (pydantic), with ``codec`` when given."""
    if codec is None:
        return BASE_CONVERTER
    # Failure messages can quote what a handler was given: encode them too.
    return dataclasses.replace(
        BASE_CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def _read_or_create_dev_key(path: Path) -> str:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # lost a race with another process: use theirs
            return path.read_text(encoding="utf-8")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(entry + "\n")
        os.chmod(path, 0o600)  # in case of an unusual umask/ACL default
        log.info("created local dev encryption key file %s (key id %s)", path, entry.split(":")[0])
        return entry
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("dev key file %s is accessible by group/others (mode %o)", path, mode)
    return text


def codec_from_env(
    environ: Mapping[str, str] = os.environ, *, dev_key_file: Path | None = None
) -> EncryptionCodec | None:
    """Codec from ``COLLECTIONS_ENCRYPTION_KEYS``; else from/creating ``dev_key_file``; else None.

    ``dev_key_file`` is meant for the embedded local stack (demo, ``make run``)
    so that local runs encrypt too without any hard-coded key.  The file holds
    ``kid:base64key`` entries (first = active) and is created with mode 0600.
    """
    keys = load_keys_from_env(environ)
    if keys is None and dev_key_file is not None:
        keys = parse_keys(_read_or_create_dev_key(Path(dev_key_file)), source=str(dev_key_file))
    if keys is None:
        return None
    return EncryptionCodec(keys, next(iter(keys)))
