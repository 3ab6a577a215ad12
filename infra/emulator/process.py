"""The emulator as a child process: started, waited for until it listens, stopped.

The stack runs it this way so that no worker shares its event loop or its port: workers come and
go, the emulator (and the provider log the outbox reconciles against) stays.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120  # python and aiohttp starting on a loaded machine
STOP_SECONDS = 10


class EmulatorProcess:
    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.url_file = state_dir / "emulator.url"
        self.log_file = state_dir / "emulator.log"
        self.host, self.port = host, port
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Start it and return its base URL."""
        self.url_file.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "infra.emulator", "--host", self.host,
                "--port", str(self.port), "--url-file", str(self.url_file),
                "--parent-pid", str(os.getpid()),
                stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                cwd=ROOT,
                # Its own process group: a Ctrl-C meant for a worker in the same terminal does
                # not reach it; the stack stops it.
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(START_SECONDS):
                while not self.url_file.exists():
                    if self._proc.returncode is not None:
                        raise RuntimeError(f"provider emulator exited ({self._proc.returncode}); "
                                           f"see {self.log_file}")
                    await asyncio.sleep(0.1)
        except BaseException:
            await self.stop()
            raise
        return self.url_file.read_text().strip()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
