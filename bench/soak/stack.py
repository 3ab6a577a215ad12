"""The soak's stack, each piece restartable on its own: PostgreSQL (embedded), the Temporal dev
server (SQLite file, fixed port), the provider emulator (its own process, kept all along: its log
is what the reconciler reads), workers (`python worker.py`, SIGKILLed and replaced) and the HTTP
API (`python -m api`).

`python -m infra.stack` runs the same pieces, but in one process that owns them all: there a dev
server or PostgreSQL restart means restarting the stack, emulator and its log included. So the
soak assembles them from the same building blocks (`infra.database.EmbeddedPostgres`,
`infra.temporal_server.start_dev_server`, `infra.emulator.process.EmulatorProcess`) and points
workers and the API at them through the environment, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from infra.codec import generate_key
from infra.database import EmbeddedPostgres, migrate
from infra.emulator import sendgrid, twilio
from infra.emulator.process import EmulatorProcess
from infra.endpoints import free_port
from infra.temporal_server import start_dev_server
from infra.webhook_keys import local_key_pair

ROOT = Path(__file__).resolve().parents[2]
TASK_QUEUE = "soak-collections"
WORKER_READY = "worker running on task queue"
ROLES = {"loan-system": "soak-loan-system", "agent": "soak-agent", "operator": "soak-operator"}


@dataclass
class Child:
    """One child process (a worker or the API), its log in the state folder."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, *self.args], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no completion, no cleanup."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self, within: float = 20) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class SoakStack:
    state: Path
    day_seconds: int
    webhook_url: str  # the chaos proxy the emulator calls (and the API checks signatures for)
    temporal_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    encryption_keys: str = field(default_factory=generate_key)
    api_keys: dict[str, str] = field(default_factory=dict)  # role -> secret
    dsn: str = ""
    emulator_url: str = ""
    pg: EmbeddedPostgres | None = None
    temporal: WorkflowEnvironment | None = None
    emulator: EmulatorProcess | None = None
    workers: list[Child] = field(default_factory=list)
    api: Child | None = None
    _worker_n: int = 0

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # ----------------------------------------------------------------- PostgreSQL
    async def start_postgres(self) -> None:
        self.pg = EmbeddedPostgres(self.state / "postgres")
        dsn = await asyncio.to_thread(self.pg.start)
        if self.dsn and dsn != self.dsn:
            raise RuntimeError("PostgreSQL came back on another address")
        self.dsn = dsn

    async def stop_postgres(self) -> None:
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
            self.pg = None

    # ------------------------------------------------------------------- Temporal
    async def start_temporal(self) -> None:
        self.temporal = await start_dev_server(self.state / "temporal.sqlite",
                                               port=self.temporal_port)

    async def stop_temporal(self) -> None:
        if self.temporal is not None:
            await self.temporal.shutdown()
            self.temporal = None

    # ------------------------------------------------------------------- emulator
    async def start_emulator(self) -> None:
        self.emulator = EmulatorProcess(self.state, port=free_port())
        self.emulator_url = await self.emulator.start()
        pair = local_key_pair(self.state)
        async with httpx.AsyncClient(base_url=self.emulator_url, timeout=30) as http:
            resp = await http.post("/_emulator/webhooks", json={
                "base_url": self.webhook_url, "twilio_auth_token": twilio.AUTH_TOKEN,
                "sendgrid_private_key_pem": pair.private_pem.decode(), "delay_seconds": 0.3})
            resp.raise_for_status()

    # -------------------------------------------------------------------- children
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TEMPORAL_", "TWILIO_", "SENDGRID_", "COLLECTIONS_",
                                    "DATABASE_", "WEBHOOK_", "API_"))}
        env.update({
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "TEMPORAL_ADDRESS": self.temporal_address, "DATABASE_URL": self.dsn,
            "TWILIO_ACCOUNT_SID": twilio.ACCOUNT_SID, "TWILIO_AUTH_TOKEN": twilio.AUTH_TOKEN,
            "TWILIO_BASE_URL": self.emulator_url, "SENDGRID_API_KEY": sendgrid.API_KEY,
            "SENDGRID_BASE_URL": self.emulator_url, "TASK_QUEUE": TASK_QUEUE,
            "COLLECTIONS_ENCRYPTION_KEYS": self.encryption_keys, "STATE_DIR": str(self.state),
            # A provider call gives up after 5 s (the emulator's "timeout" faults answer after
            # 8 s); an unanswered send is reconciled with the provider's log after 10 s.
            "PROVIDER_TIMEOUT_SECONDS": "5", "SEND_IN_FLIGHT_SECONDS": "10",
        })
        env.update(extra)
        return env

    def start_worker(self) -> Child:
        self._worker_n += 1
        worker = Child(f"worker-{self._worker_n}", ["worker.py"], self.env(),
                       self.state / "logs" / f"worker-{self._worker_n}.log").start()
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive]

    async def wait_worker(self, worker: Child, within: float = 120) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while WORKER_READY not in worker.text():
            if not worker.alive:
                raise RuntimeError(f"{worker.name} exited:\n{worker.text()[-2000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{worker.name} not ready in {within:.0f} s")
            await asyncio.sleep(0.3)

    async def start_api(self) -> None:
        self.api_keys = {role: secrets.token_urlsafe(24) for role in ROLES}
        keys = ",".join(f"{ROLES[r]}={r}:{s}" for r, s in self.api_keys.items())
        env = self.env(API_HOST="127.0.0.1", API_PORT=str(self.api_port), API_KEYS=keys,
                       WEBHOOK_BASE_URL=self.webhook_url,
                       SENDGRID_WEBHOOK_PUBLIC_KEY=local_key_pair(self.state).public_key_b64)
        self.api = Child("api", ["-m", "api"], env, self.state / "logs" / "api.log").start()
        deadline = asyncio.get_running_loop().time() + 120
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as http:
            while True:
                if not self.api.alive:
                    raise RuntimeError(f"the API exited:\n{self.api.text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError("the API was not ready in 120 s")
                await asyncio.sleep(0.3)

    # ---------------------------------------------------------------- whole stack
    async def start(self, workers: int) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        await self.start_postgres()
        await migrate(self.dsn)
        await self.start_emulator()
        await self.start_temporal()
        started = [self.start_worker() for _ in range(workers)]
        await self.start_api()
        for w in started:
            await self.wait_worker(w)

    async def stop(self) -> None:
        for child in [*self.workers, *([self.api] if self.api else [])]:
            with contextlib.suppress(Exception):
                await child.stop()
        if self.emulator is not None:
            await self.emulator.stop()
        with contextlib.suppress(Exception):
            await self.stop_temporal()
        with contextlib.suppress(Exception):
            await self.stop_postgres()

    def endpoints(self) -> dict[str, str]:
        return {"temporal_address": self.temporal_address, "dsn": self.dsn,
                "emulator_url": self.emulator_url, "api_url": self.api_url}
