"""The vault's encryption: a borrower's personal fields as one AES-GCM ciphertext with a key id.

The keys are the payload codec's (`COLLECTIONS_ENCRYPTION_KEYS`, else the local stack's key file),
read by `vault_keys`, the one place both the service (storing at start) and the worker (reading at
send time) take them from. The first key encrypts; every key decrypts, so keys rotate as the
codec's do. The entry's reference is bound as associated data: a ciphertext copied onto another
entry does not decrypt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.codec import NONCE_SIZE, _read_or_create_dev_key, load_keys_from_env, parse_keys

KEY_FILE: Final = "encryption.key"  # the local stack's, as infra.stack names it
_AAD_PREFIX: Final = b"collections-borrower-vault:v1:"


class VaultKeyError(LookupError):
    """No key to encrypt with, or the entry's key is not held; never names key material."""


def vault_keys(environ: Mapping[str, str] = os.environ, *, state_dir: Path | None = None,
               create: bool = False) -> dict[str, bytes] | None:
    """The collections keys, else the local stack's key file under `state_dir` (made when
    `create`, as the stack does at start-up); None when there are none."""
    keys = load_keys_from_env(environ)
    if keys is not None or state_dir is None:
        return keys
    path = state_dir / KEY_FILE
    if not path.is_file() and not create:
        return None
    return parse_keys(_read_or_create_dev_key(path), source=str(path))


class VaultCipher:
    """Encrypts and decrypts one vault entry's fields (a flat dict of strings)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise VaultKeyError("the borrower vault needs an encryption key "
                                "(COLLECTIONS_ENCRYPTION_KEYS)")
        self._ciphers = {kid: AESGCM(bytes(key)) for kid, key in keys.items()}
        self.active_key_id = next(iter(keys))

    def encrypt(self, ref: str, fields: Mapping[str, str]) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE_SIZE)
        plain = json.dumps(dict(fields), ensure_ascii=False, sort_keys=True).encode()
        sealed = self._ciphers[self.active_key_id].encrypt(nonce, plain, _AAD_PREFIX + ref.encode())
        return nonce + sealed, self.active_key_id

    def decrypt(self, ref: str, ciphertext: bytes, key_id: str) -> dict[str, str]:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise VaultKeyError(f"vault entry is encrypted with key id {key_id!r}, not held here")
        try:
            plain = cipher.decrypt(ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:],
                                   _AAD_PREFIX + ref.encode())
        except InvalidTag:
            raise VaultKeyError(
                f"vault entry failed authentication with key id {key_id!r}") from None
        found = json.loads(plain)
        return {str(k): str(v) for k, v in found.items()}
