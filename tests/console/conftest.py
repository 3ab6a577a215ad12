"""The console as agents and operators meet it: the HTTP service (`python -m api`, which mounts
the console) in its own process over the session's real servers, a worker of its own sharing its
encryption keys, and Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from infra.codec import generate_key
from tests.console.cases import Console
from tests.served_api import encrypted_worker, served_api

SHOTS = Path(__file__).resolve().parent / "screenshots"
TASK_QUEUE = "console-collections"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Names are who acts: an agent key's name is its agent id.
USERS = {"agent-7": "agent", "agent-8": "agent", "ops": "operator", "erp": "loan-system"}


@pytest.fixture(scope="session")
def console_keys() -> str:
    return generate_key()


@pytest.fixture(scope="session")
async def console_worker(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, providers: Providers,
                         console_keys: str) -> AsyncIterator[Client]:
    async with encrypted_worker(dev_env, pool, providers, console_keys, TASK_QUEUE) as client:
        yield client


@pytest.fixture(scope="session")
async def console(console_worker: Client, dev_env: WorkflowEnvironment, pg_dsn: str,
                  state_dir: Path, console_keys: str) -> AsyncIterator[Console]:
    keys = {user: secrets.token_urlsafe(24) for user in USERS}
    async with served_api(
            dev_env, pg_dsn=pg_dsn, task_queue=TASK_QUEUE, encryption_keys=console_keys,
            state_dir=state_dir / "console-state", log=state_dir / "console-api.log",
            ready_path="/console/login",
            api_keys=",".join(f"{u}={role}:{keys[u]}" for u, role in USERS.items()),
            extra_env={"CONSOLE_SECRET": secrets.token_urlsafe(32)}) as url:
        yield Console(url, keys, console_worker, TASK_QUEUE)


def _have_chromium() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not _have_chromium():
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/ensure-chromium.sh (make test does)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  # Nothing leaves the machine: no sync, no component updates, no DNS prefetch.
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--dns-prefetch-disable",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, console: Console,
               request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) per test; a screenshot of the last page at the end."""
    context = await browser.new_context(base_url=console.url, timezone_id="Europe/Berlin",
                                        viewport={"width": 1360, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        SHOTS.mkdir(exist_ok=True)
        await tab.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
        await context.close()
