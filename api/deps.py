"""What routes share: the service's connections for the app's lifetime, as FastAPI dependencies."""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from temporalio.client import Client

from service.connection import Connections
from service.vault import Vault, configured_vault


class Services:
    """One set of connections per process: the PostgreSQL pool is opened at start, Temporal on
    first use (so the API starts, and answers 503, while Temporal is down)."""

    def __init__(self, connections: Connections, pool: asyncpg.Pool) -> None:
        self.connections = connections
        self.pool = pool
        self._lock = asyncio.Lock()

    @property
    def task_queue(self) -> str:
        return self.connections.task_queue

    def dsn(self) -> str:
        return self.connections.dsn()

    def vault(self) -> Vault | None:
        """The borrower vault on the app's pool (issue 18); None without any encryption key."""
        return configured_vault(self.connections.settings, self.pool)

    async def temporal(self) -> Client:
        async with self._lock:  # one connect, however many requests arrive at once
            return await self.connections.temporal()


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def temporal_client(s: Annotated[Services, Depends(services)]) -> Client:
    return await s.temporal()


def database(s: Annotated[Services, Depends(services)]) -> asyncpg.Pool:
    return s.pool


Svc = Annotated[Services, Depends(services)]
Temporal = Annotated[Client, Depends(temporal_client)]
Db = Annotated[asyncpg.Pool, Depends(database)]
