"""WeCom's (企业微信) callback protocol, both ways: what WeCom does to call the lender's callback
URL (the emulator plays it) and what the lender does to check the call (service/wecom_events.py).

- The URL WeCom calls: GET to verify it (msg_signature, timestamp, nonce, echostr: answer the
  decrypted echostr), POST for events (the same query; the body `<xml><ToUserName/><AgentID/>
  <Encrypt/></xml>`).
- msg_signature = SHA1 over the sorted, concatenated [token, timestamp, nonce, Encrypt].
- Encrypt = base64 of AES-256-CBC with key = base64decode(EncodingAESKey + "="), IV = key[:16],
  PKCS#7 padding to 32-byte blocks, over 16 random bytes + the message's length (4 bytes, big
  endian) + the message (XML) + the receive id (the corp id).

Source: developer.work.weixin.qq.com/document/path/90968 (加解密方案说明) and 90930 (回调配置).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Where the lender's callback lives under its public base URL (api/routes/wecom_webhooks.py).
CALLBACK_PATH: Final = "/webhooks/wecom/callback"
BLOCK: Final = 32  # WeCom pads to 32 bytes, not AES's 16
AES_KEY_CHARS: Final = 43


class CallbackCryptoError(ValueError):
    """The ciphertext does not open: not base64, bad padding, a length that does not fit."""


@dataclass(frozen=True)
class CallbackKeys:
    """The callback's token and EncodingAESKey (set in WeCom's admin console), and the corp id
    every message names as its receiver."""

    token: str
    encoding_aes_key: str
    receive_id: str

    @property
    def aes_key(self) -> bytes:
        if len(self.encoding_aes_key) != AES_KEY_CHARS:
            raise ValueError(f"an EncodingAESKey has {AES_KEY_CHARS} characters")
        key = base64.b64decode(self.encoding_aes_key + "=")
        if len(key) != 32:
            raise ValueError("an EncodingAESKey decodes to 32 bytes")
        return key


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode(),
                        usedforsecurity=True).hexdigest()


def signature_holds(keys: CallbackKeys, msg_signature: str, timestamp: str, nonce: str,
                    encrypted: str) -> bool:
    expected = signature(keys.token, timestamp, nonce, encrypted)
    return hmac.compare_digest(expected.encode(), msg_signature.strip().lower().encode())


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def encrypt(keys: CallbackKeys, message: bytes, random16: bytes | None = None) -> str:
    """The `Encrypt` text of `message`, as WeCom makes it."""
    prefix = random16 if random16 is not None else os.urandom(16)
    plain = prefix + struct.pack(">I", len(message)) + message + keys.receive_id.encode()
    pad = BLOCK - len(plain) % BLOCK
    encryptor = _cipher(keys.aes_key).encryptor()
    sealed = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(sealed).decode()


def decrypt(keys: CallbackKeys, encrypted: str) -> tuple[bytes, str]:
    """(message, the receive id it names); CallbackCryptoError when it does not open."""
    try:
        sealed = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise CallbackCryptoError("Encrypt is not base64") from None
    if not sealed or len(sealed) % 16:
        raise CallbackCryptoError("Encrypt is not whole AES blocks")
    decryptor = _cipher(keys.aes_key).decryptor()
    plain = decryptor.update(sealed) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise CallbackCryptoError("Encrypt has bad padding")
    body = plain[16:-pad]
    if len(body) < 4:
        raise CallbackCryptoError("Encrypt is too short")
    (length,) = struct.unpack(">I", body[:4])
    if length > len(body) - 4:
        raise CallbackCryptoError("Encrypt names a length longer than itself")
    message, receive_id = body[4:4 + length], body[4 + length:]
    try:
        return message, receive_id.decode()
    except UnicodeDecodeError:
        raise CallbackCryptoError("the receive id is not text") from None
