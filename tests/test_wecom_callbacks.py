"""WeCom's callback encryption (infra/wecom_callback.py) against its description, built by hand here
step by step, so a mistake shared by the emulator (which encrypts) and the service (which
decrypts) cannot pass unseen. The callbacks over real HTTP: tests/api/test_wecom_webhooks.py."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from infra import wecom_callback
from infra.emulator.wecom import CORP_ID, callback_keys
from infra.settings import Settings, WeComSettings
from infra.wecom_callback import CallbackCryptoError


def by_hand(message: bytes, prefix: bytes) -> str:
    key = base64.b64decode(callback_keys().encoding_aes_key + "=")
    plain = prefix + len(message).to_bytes(4, "big") + message + CORP_ID.encode()
    pad = 32 - len(plain) % 32  # PKCS#7 to 32-byte blocks: a whole block when already aligned
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad)
                            + encryptor.finalize()).decode()


# 16 + 4 + 28 + the 16 characters of the corp id fill two blocks exactly: a whole pad block.
@pytest.mark.parametrize("size", [0, 1, 28, 29, 60, 300])
def test_encrypt_and_decrypt_are_wecoms_scheme(size: int) -> None:
    assert len(CORP_ID) == 16
    keys, prefix, message = callback_keys(), bytes(range(16)), b"<" * size
    sealed = wecom_callback.encrypt(keys, message, prefix)
    assert sealed == by_hand(message, prefix)
    assert wecom_callback.decrypt(keys, sealed) == (message, CORP_ID)


def test_the_signature_is_sha1_over_the_sorted_parts() -> None:
    parts = ["token", "1409659589", "263014780", "P9nAzCzyDtyTWESHep1vC5X9xho"]
    expected = hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()
    assert wecom_callback.signature(*parts) == expected
    keys = wecom_callback.CallbackKeys("token", callback_keys().encoding_aes_key, CORP_ID)
    assert wecom_callback.signature_holds(keys, expected.upper(), *parts[1:])
    assert not wecom_callback.signature_holds(keys, expected, parts[1], "1", parts[3])


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode(),
                                 base64.b64encode(bytes(32)).decode()])
def test_what_does_not_open_is_refused(bad: str) -> None:
    with pytest.raises(CallbackCryptoError):
        wecom_callback.decrypt(callback_keys(), bad)


def test_the_callback_keys_come_from_the_settings() -> None:
    assert Settings().wecom.callback_keys() == callback_keys()  # the local stack: the emulator's
    real = WeComSettings(corp_id="ww1", corp_secret="s3cr3t-value")
    assert real.callback_keys() is None  # set up without the callback keys: refused (503)
    keyed = real.model_copy(update={"callback_token": "t0k", "callback_aes_key": "k" * 43})
    assert keyed.callback_keys() == wecom_callback.CallbackKeys("t0k", "k" * 43, "ww1")
