"""`python worker.py` as a child process, for the tests that kill workers (SIGKILL) mid-flight.

The child gets every endpoint from the environment (TEMPORAL_ADDRESS, DATABASE_URL, Twilio and
SendGrid credentials and base URLs), so it starts nothing embedded, exactly as in production. Its
payloads are encrypted with COLLECTIONS_ENCRYPTION_KEYS: test clients that read what it wrote use
`codec_client(...)` with the same key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio.client import Client

from infra.codec import EncryptionCodec, data_converter, generate_key, parse_keys
from infra.emulator import sendgrid, twilio

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "worker running on task queue"


def new_key() -> str:
    return generate_key()


def codec_for(key_entry: str) -> EncryptionCodec:
    keys = parse_keys(key_entry)
    return EncryptionCodec(keys, next(iter(keys)))


def codec_client(client: Client, key_entry: str) -> Client:
    """A client on the same connection (and interceptors) whose payloads use the workers' key."""
    config = client.config()
    config["data_converter"] = data_converter(codec_for(key_entry))
    return Client(**config)


def worker_env(*, temporal_address: str, dsn: str, emulator_url: str, task_queue: str,
               key_entry: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "TWILIO_", "SENDGRID_", "COLLECTIONS_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "TEMPORAL_ADDRESS": temporal_address,
        "DATABASE_URL": dsn,
        "TWILIO_ACCOUNT_SID": twilio.ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": twilio.AUTH_TOKEN,
        "TWILIO_BASE_URL": emulator_url,
        "SENDGRID_API_KEY": sendgrid.API_KEY,
        "SENDGRID_BASE_URL": emulator_url,
        "TASK_QUEUE": task_queue,
        "COLLECTIONS_ENCRYPTION_KEYS": key_entry,
        # endpoints.json goes here, not into the checkout's .state used by the demo
        "STATE_DIR": str(state_dir),
    })
    env.update(extra)
    return env


class WorkerProcess:
    """One `python worker.py` child; `kill()` is SIGKILL: no shutdown, no completion, no cleanup."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # our own process group: signals go to this child only
            )
        finally:
            log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, within: float = 90) -> WorkerProcess:
        deadline = asyncio.get_running_loop().time() + within
        while READY_LINE not in self.log():
            if not self.running:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-3000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"worker {self.name} not ready in {within}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)
        return self

    async def kill(self) -> None:
        """SIGKILL, then reap without blocking the event loop (the emulator runs on it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        await self._reap(within=30)

    async def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        if not await self._reap(within=10):
            await self.kill()

    async def _reap(self, within: float) -> bool:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + within
        while self.proc.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def window_timezone(target_hour: int = 15) -> str:
    """A fixed-offset zone where it is now about `target_hour` o'clock: inside every rule pack's
    contact window (08:00-21:00) with hours of margin, whenever the tests run. Steps at 10:00
    local today are due at once."""
    utc_hour = datetime.now(UTC).hour
    offset = (target_hour - utc_hour) % 24
    if offset > 14:
        offset -= 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-3 is UTC+3


def due_for(tz: str, days_ago: int) -> date:
    """A due date `days_ago` days before the borrower's local today."""
    return (datetime.now(ZoneInfo(tz)) - timedelta(days=days_ago)).date()
