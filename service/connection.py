"""Reaching Temporal and PostgreSQL: the configured ones, else the local stack `make run` started.

`Connections` is what a surface holds for one request or one command: it reads the settings once,
connects on first use and closes what it opened.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import asyncpg
from pydantic import ValidationError
from temporalio.client import Client

from contracts.names import TASK_QUEUE
from infra.settings import Settings
from infra.stack import connect_temporal, read_endpoints
from infra.vault_crypto import vault_keys
from service.errors import BadInput, Unreachable
from service.vault import Vault, configured_vault

KEY_FILE: Final = "encryption.key"
ENDPOINTS: Final = "endpoints.json"
# host:port, the host a name, an IPv4 address or a bracketed IPv6 one; no scheme.
_ADDRESS_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                         r":(?P<port>[0-9]{1,5})", re.ASCII)


def load_settings() -> Settings:
    """The environment's settings; a bad variable is bad input naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadInput("configuration",
                       f"{'.'.join(map(str, first['loc'])).upper()}: {first['msg']}") from None


def task_queue(settings: Settings) -> str:
    return str(getattr(settings, "task_queue", None) or TASK_QUEUE)


def _key_file(settings: Settings) -> Path | None:
    """The local stack's key file, only if it exists: `codec_from_env` would create a new one."""
    path = settings.state_dir / KEY_FILE
    return path if path.is_file() else None


def check_address(address: str, field: str = "TEMPORAL_ADDRESS") -> str:
    """`host:port` (no scheme), port 1-65535: a malformed address is bad input naming where it
    came from, found before any connection is tried."""
    text = address.strip()
    match = _ADDRESS_RE.fullmatch(text)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise BadInput(field, f"{address[:80]!r} is not host:port (e.g. 127.0.0.1:7233)")
    return text


def temporal_target(settings: Settings) -> Settings:
    """The settings with the address to use: TEMPORAL_ADDRESS, else the running local stack's.

    Never a guess: with neither, nothing is reached (a server that happens to listen on the
    default port may be someone else's).
    """
    if settings.temporal_address is not None:
        return settings.model_copy(update={"temporal_address": check_address(
            settings.temporal_address)})
    endpoints = read_endpoints(settings.state_dir) or {}
    address = endpoints.get("temporal_address")
    if not address:
        raise Unreachable(
            "no Temporal to reach: TEMPORAL_ADDRESS is not set and no local stack is running "
            f"({settings.state_dir / ENDPOINTS} not found); set it, or start one with make run")
    return settings.model_copy(update={
        "temporal_address": check_address(str(address), str(settings.state_dir / ENDPOINTS)),
        "temporal_namespace": endpoints.get("namespace") or settings.temporal_namespace,
    })


async def connect(settings: Settings | None = None) -> Client:
    """A client for the configured Temporal, else for the running local stack (`make run`)."""
    settings = temporal_target(settings or load_settings())
    address = settings.temporal_address
    try:
        return await connect_temporal(settings, key_file=_key_file(settings))
    except ValueError as err:
        if "target URL" in str(err):  # the SDK's own check of the address, should ours miss
            raise BadInput("TEMPORAL_ADDRESS",
                           f"{address!r} is not host:port (e.g. 127.0.0.1:7233)") from None
        # Malformed keys; the message names the entry, never the key.
        raise BadInput("COLLECTIONS_ENCRYPTION_KEYS", f"encryption keys unusable: {err}") from None
    except OSError as err:  # a TLS file that cannot be read
        raise BadInput("configuration",
                       f"cannot read TLS file {err.filename}: {err.strerror}") from None
    except RuntimeError:  # the SDK's "Failed client connect: ..."
        raise Unreachable(
            f"cannot reach Temporal at {address}: is the worker running? (make run)"
        ) from None


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL, else the running local stack's PostgreSQL."""
    settings = settings or load_settings()
    if settings.database_url:
        return check_database_url(settings.database_url)
    dsn = (read_endpoints(settings.state_dir) or {}).get("dsn")
    if not dsn:
        raise Unreachable("no database: set DATABASE_URL or start the local stack (make run)")
    return str(dsn)


NOT_A_URL: Final = ("is not a PostgreSQL URL such as postgresql://user:password@host:5432/db "
                     "(not shown: it may hold a password)")


def check_database_url(dsn: str) -> str:
    """A postgresql:// URL with a sound host and port; never echoed, it may hold a password."""
    try:
        parts = urlsplit(dsn.strip())
        port = parts.port  # ValueError when not a number or out of range
    except ValueError:
        raise BadInput("DATABASE_URL", NOT_A_URL) from None
    if parts.scheme not in ("postgresql", "postgres") or port == 0:
        raise BadInput("DATABASE_URL", NOT_A_URL)
    return dsn.strip()


async def open_pool(dsn: str, *, max_size: int = 5) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        if isinstance(exc, ValueError):  # asyncpg's ClientConfigurationError is both
            raise BadInput("DATABASE_URL", NOT_A_URL) from None
        raise Unreachable(f"cannot reach the database: {type(exc).__name__}") from None
    except ValueError:  # a DSN asyncpg cannot parse; never echoed, it may hold a password
        raise BadInput("DATABASE_URL", NOT_A_URL) from None
    assert pool is not None
    return pool


class Connections:
    """The settings, a Temporal client and a PostgreSQL pool, each made on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._client: Client | None = None
        self._pool: asyncpg.Pool | None = None

    @property
    def task_queue(self) -> str:
        return task_queue(self.settings)

    def dsn(self) -> str:
        return database_url(self.settings)

    async def temporal(self) -> Client:
        if self._client is None:
            self._client = await connect(self.settings)
        return self._client

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await open_pool(self.dsn())
        return self._pool

    async def vault(self) -> Vault | None:
        """The borrower vault (issue 18) on this pool, or None without any encryption key (no
        database is needed then)."""
        if vault_keys(state_dir=self.settings.state_dir.resolve()) is None:
            return None
        return configured_vault(self.settings, await self.pool())

    async def close(self) -> None:
        """Close the pool and drop the client while the event loop still runs.

        A Temporal client still alive at interpreter exit (kept, say, by the frames of an error's
        traceback) can abort the process from one of the SDK's threads (exit 134).
        """
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._client = None
        gc.collect()
