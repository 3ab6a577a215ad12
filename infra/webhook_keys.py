"""The local stack's stand-in for SendGrid's Signed Event Webhook key pair (ECDSA P-256).

SendGrid keeps the private key and shows the public one, base64 DER, in its mail settings. Locally
the emulator signs with the private key and the API verifies with the public one; both find the
pair in the state folder, created by whichever asks first.
"""

from __future__ import annotations

import base64
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_FILE: Final = "sendgrid-webhook-key.pem"


@dataclass(frozen=True)
class WebhookKeyPair:
    private_pem: bytes

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def public_key_b64(self) -> str:
        """The public key as SendGrid shows it (what SENDGRID_WEBHOOK_PUBLIC_KEY takes)."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()


def generate() -> WebhookKeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    return WebhookKeyPair(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))


def local_key_pair(state_dir: Path) -> WebhookKeyPair:
    """The pair in `state_dir`, created (readable by its owner only) if there is none yet. Two
    processes asking at once get the same pair: the file appears whole, once (a hard link)."""
    path = state_dir / KEY_FILE
    if not path.is_file():
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(generate().private_pem)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return WebhookKeyPair(path.read_bytes())
