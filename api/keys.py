"""API keys: read from the configuration, kept in PostgreSQL as SHA-256 digests only.

The configuration is the source of truth: at start the app stores the digests of the configured
keys and revokes every stored key the configuration no longer lists. For the local stack,
`python -m api.keys` writes one key per role to STATE_DIR/api-keys.json (mode 0600) and prints
where; the app reads that file when API_KEYS is unset.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import asyncpg

from contracts.names import API_KEY_FILE

KEY_FILE: Final = API_KEY_FILE
_DIGEST_PREFIX: Final = "sha256:"


class Role(StrEnum):
    LOAN_SYSTEM = "loan-system"
    AGENT = "agent"
    OPERATOR = "operator"
    # A collection agency (issue 19): the key's name is the agency's id in the roster.
    AGENCY = "agency"


@dataclass(frozen=True)
class ApiKey:
    """One configured key: `name` is who acts in the audit trail (for an agent, its agent id)."""

    name: str
    role: Role
    sha256: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(name: str, role: str, secret: str, where: str) -> ApiKey:
    name = name.strip()
    if not name or not name.isprintable() or len(name) > 64:
        raise ValueError(f"{where}: a key needs a printable name of at most 64 characters")
    try:
        parsed = Role(role.strip())
    except ValueError:
        raise ValueError(f"{where}: key {name!r}: role must be one of "
                         f"{', '.join(r.value for r in Role)}") from None
    secret = secret.strip()
    if secret.startswith(_DIGEST_PREFIX):
        hexdigest = secret.removeprefix(_DIGEST_PREFIX).lower()
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"{where}: key {name!r}: sha256: needs 64 hex digits")
        return ApiKey(name, parsed, hexdigest)
    if len(secret) < 16:
        raise ValueError(f"{where}: key {name!r} is shorter than 16 characters")
    return ApiKey(name, parsed, digest(secret))


def parse_keys(text: str, where: str = "API_KEYS") -> list[ApiKey]:
    """`name=role:secret[,name=role:secret...]`; errors name the key, never its secret."""
    keys = []
    for n, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        name, eq, rest = entry.partition("=")
        role, colon, secret = rest.partition(":")
        if not eq or not colon:
            raise ValueError(f"{where}: entry {n} is not name=role:secret")
        keys.append(_key(name, role, secret, where))
    return keys


def read_key_file(path: Path) -> list[ApiKey]:
    entries = json.loads(path.read_text())["keys"]
    return [_key(e["name"], e["role"], e["key"], str(path)) for e in entries]


def write_local_keys(state_dir: Path) -> Path:
    """One new key per role in STATE_DIR/api-keys.json, unless the file is there already."""
    path = state_dir / KEY_FILE
    if path.exists():
        return path
    state_dir.mkdir(parents=True, exist_ok=True)
    names = {Role.LOAN_SYSTEM: "loan-system", Role.AGENT: "agent-1", Role.OPERATOR: "operator",
             Role.AGENCY: "huaxin"}
    entries = [{"name": names[r], "role": r.value, "key": secrets.token_urlsafe(24)} for r in Role]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"keys": entries}, out, indent=2)
    return path


async def store_keys(pool: asyncpg.Pool, keys: list[ApiKey]) -> None:
    """Make the table hold exactly the configured keys (others revoked), in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO api_keys (key_sha256, name, role) VALUES ($1, $2, $3) "
            "ON CONFLICT (key_sha256) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, "
            "revoked_at = NULL",
            [(k.sha256, k.name, k.role.value) for k in keys])
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() "
            "WHERE revoked_at IS NULL AND NOT key_sha256 = ANY($1::text[])",
            [k.sha256 for k in keys])


async def find_key(pool: asyncpg.Pool, secret: str) -> ApiKey | None:
    row = await pool.fetchrow(
        "SELECT key_sha256, name, role FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL",
        digest(secret))
    return None if row is None else ApiKey(row["name"], Role(row["role"]), row["key_sha256"])


def main() -> None:
    """Write the local stack's keys (if not there yet) and say where they are."""
    state_dir = Path(os.environ.get("STATE_DIR", ".state"))
    path = write_local_keys(state_dir)
    print(f"API keys (one per role): {path.resolve()}", file=sys.stdout)


if __name__ == "__main__":
    main()
