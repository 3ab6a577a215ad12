"""The console as agents and operators meet it: the HTTP service (`python -m api`, which mounts
the console) in its own process over the session's real servers, a worker of its own sharing its
encryption keys, and Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.wiring import Providers
from infra.codec import EncryptionCodec, data_converter, generate_key, parse_keys
from infra.endpoints import free_port
from tests.console.cases import Console
from worker import running_worker

ROOT = Path(__file__).resolve().parents[2]
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
    keys = parse_keys(console_keys)
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, namespace=dev_env.client.namespace,
        data_converter=data_converter(EncryptionCodec(keys, next(iter(keys)))))
    async with running_worker(client, pool, providers, task_queue=TASK_QUEUE):
        yield client


@pytest.fixture(scope="session")
async def console(console_worker: Client, dev_env: WorkflowEnvironment, pg_dsn: str,
                  state_dir: Path, console_keys: str) -> AsyncIterator[Console]:
    keys = {user: secrets.token_urlsafe(24) for user in USERS}
    port = free_port()
    log = state_dir / "console-api.log"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "DATABASE_URL": pg_dsn,
        "TASK_QUEUE": TASK_QUEUE,
        "COLLECTIONS_ENCRYPTION_KEYS": console_keys,
        "STATE_DIR": str(state_dir / "console-state"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_KEYS": ",".join(f"{u}={role}:{keys[u]}" for u, role in USERS.items()),
        "CONSOLE_SECRET": secrets.token_urlsafe(32),
    }
    proc = _spawn(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc, log)
        yield Console(url, keys, console_worker, TASK_QUEUE)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _log(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


def _have_chromium() -> bool:
    return Path(CHROMIUM).exists()


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the API exited ({proc.returncode}):\n{_log(log)}")
            try:
                if (await http.get("/console/login")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the API was not ready within 60s:\n{_log(log)}")
            await asyncio.sleep(0.2)


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
