"""The app factory: routes, problem details, and the service's connections for the app's life.

    uvicorn --factory api.main:create_app      # or: python -m api
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from fastapi import FastAPI

from api import metrics, problems
from api.deps import Services
from api.keys import KEY_FILE, ApiKey, parse_keys, read_key_file, store_keys
from api.routes import (
    agency,
    agents,
    erasure,
    health,
    loan_system,
    operators,
    tasks,
    voice_webhooks,
    webhooks,
    wecom_webhooks,
)
from api.settings import ApiSettings
from console import pages as console_pages
from service.connection import Connections

VERSION: Final = "1.0.0"
DESCRIPTION: Final = """Collection cases for loan systems, agents and operators.

Every request carries `Authorization: Bearer <API key>`; each key has one role (loan-system,
agent, operator) and each endpoint names the roles it allows. Every write takes an
`Idempotency-Key` header: a repeat with the same key and body gets the first answer and makes no
second effect. Errors are RFC 9457 problem details (`application/problem+json`) whose `kind` is
the service's error kind and whose `field` names the input at fault.
"""


def configured_keys(settings: ApiSettings, state_dir: Path) -> list[ApiKey]:
    if settings.keys:
        return parse_keys(settings.keys)
    path = settings.key_file or state_dir / KEY_FILE
    if not path.is_file():
        raise RuntimeError(f"no API keys: set API_KEYS, or API_KEY_FILE, or run "
                           f"`python -m api.keys` to write {path}")
    return read_key_file(path)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    api_settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connections = Connections()
        keys = configured_keys(api_settings, connections.settings.state_dir)
        pool = await connections.pool()
        try:
            await store_keys(pool, keys)
            app.state.services = Services(connections, pool)
            yield
        finally:
            await connections.close()

    app = FastAPI(title="Debt-collection cases", version=VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.api_settings = api_settings
    problems.install(app)
    for module in (health, loan_system, agents, tasks, operators, webhooks,
                   voice_webhooks, wecom_webhooks, agency, erasure):
        app.include_router(module.router)
    app.include_router(console_pages.router)  # the web console, /console (issue 16)
    app.include_router(metrics.router)  # /metrics, Prometheus
    app.add_middleware(metrics.CountRequests)
    return app
