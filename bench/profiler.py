"""Dependency-free profiling of a whole process, every Python thread included.

    python -m bench.profiler --out profile.txt worker.py [args...]            # cProfile (default)
    python -m bench.profiler --mode sample --out profile.txt worker.py [...]  # stack sampling
    python -m bench.profiler --mode gc --out gc.txt worker.py [...]           # GC pauses

Runs the script as `__main__` and, at exit (the script returns, or SIGINT ends it), writes a text
report to `--out`.

- `cprofile` (default): a cProfile profiler in every thread (the event loop, the SDK's workflow
  activation threads, activity threads), merged: CPU by area (our workflow, our activities, the
  SDK's sandbox, converters, drivers...) and the top functions by own and cumulative time. Time in
  C code called from Python (pydantic-core, protobuf, AES) is counted; the Temporal core's Rust
  threads are not. cProfile slows Python code down, most where calls are many and small.
- `sample`: a thread reads `sys._current_frames()` every `--interval`; cheap, but it can only look
  when it holds the GIL, so it over-counts code that releases it (file and socket calls). Also
  writes `<out>.folded` (collapsed stacks, for a flame graph).
- `gc`: the pauses of Python's cyclic garbage collector, per generation (no slowdown).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

IDLE = {("selectors.py", "select"), ("threading.py", "wait"), ("thread.py", "_worker"),
        ("queue.py", "get"), ("base_events.py", "_run_once"),
        ("threading.py", "_wait_for_tstate_lock")}

# (area, substring of the file path), first match wins, checked from the innermost frame outwards
# for "self" and over every frame for "inclusive".
AREAS = [
    ("our workflow code (workflows/)", "/workflows/"),
    ("our activities", "/activities/"),
    ("our codec (AES-GCM)", "/infra/codec.py"),
    ("our client code", "/client/"),
    ("log masking", "/infra/log_masking.py"),
    ("sdk: workflow sandbox", "/temporalio/worker/workflow_sandbox/"),
    ("sdk: workflow instance", "/temporalio/worker/_workflow_instance.py"),
    ("sdk: workflow worker", "/temporalio/worker/_workflow.py"),
    ("sdk: activity worker", "/temporalio/worker/_activity.py"),
    ("sdk: pydantic converter", "/temporalio/contrib/pydantic"),
    ("sdk: converter", "/temporalio/converter.py"),
    ("sdk: other", "/temporalio/"),
    ("pydantic", "/pydantic"),
    ("protobuf", "/google/protobuf/"),
    ("jinja2", "/jinja2/"),
    ("asyncpg", "/asyncpg/"),
    ("twilio sdk", "/twilio/"),
    ("sendgrid sdk", "/sendgrid/"),
    ("aiohttp", "/aiohttp/"),
    ("logging", "/logging/"),
    ("dataclasses", "/dataclasses.py"),
    ("asyncio", "/asyncio/"),
    ("zoneinfo/datetime", "zoneinfo"),
    ("python imports (the sandbox re-imports workflow modules)", "<frozen importlib"),
    ("tomllib (policy files parsed)", "/tomllib/"),
    ("pathlib (file access)", "/pathlib.py"),
    ("typing/inspect (annotations, dataclass fields)", "/typing.py"),
    ("typing/inspect (annotations, dataclass fields)", "/inspect.py"),
    ("typing/inspect (annotations, dataclass fields)", "typing_inspection"),
    ("concurrent.futures/threading", "/concurrent/futures/"),
    ("concurrent.futures/threading", "/threading.py"),
    ("contextlib", "/contextlib.py"),
    ("json", "/json/"),
]


# C functions that wait rather than work: idle thread pools, the event loop's poll, sleeps.
IDLE_BUILTINS = ("'get' of '_queue.SimpleQueue'", "'poll' of 'select.epoll'",
                 "'acquire' of '_thread.lock'", "'select' of 'select", "time.sleep", "'wait' of ")


def _area(filename: str) -> str:
    for name, needle in AREAS:
        if needle in filename:
            return name
    return "other python"


class StackSampler:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples = 0
        self.busy: Counter[str] = Counter()  # thread name -> busy samples
        self.self_fn: Counter[str] = Counter()
        self.incl_fn: Counter[str] = Counter()
        self.self_area: Counter[str] = Counter()
        self.incl_area: Counter[str] = Counter()
        self.folded: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stack-sampler", daemon=True)
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            names = {t.ident: t.name for t in threading.enumerate()}
            self.samples += 1
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                code = frame.f_code
                if (os.path.basename(code.co_filename), code.co_name) in IDLE:
                    continue
                tname = names.get(tid, str(tid))
                tname = tname.rstrip("0123456789_") or tname
                self.busy[tname] += 1
                stack = []
                f: FrameType | None = frame
                while f is not None:
                    c = f.f_code
                    stack.append((c.co_filename, c.co_name, c.co_firstlineno))
                    f = f.f_back
                top = stack[0]
                self.self_fn[_fn(top)] += 1
                self.self_area[_area(top[0])] += 1
                for fn in {_fn(s) for s in stack}:
                    self.incl_fn[fn] += 1
                for area in {_area(s[0]) for s in stack}:
                    self.incl_area[area] += 1
                self.folded[";".join(_fn(s) for s in reversed(stack[:60]))] += 1

    def report(self, top: int = 40) -> str:
        busy = sum(self.busy.values()) or 1
        wall = time.monotonic() - self.started
        out = [f"stack samples every {self.interval * 1000:g} ms over {wall:.1f}s: "
               f"{self.samples} rounds, {busy} busy thread-samples "
               f"({busy * self.interval:.1f}s of Python running)", "",
               "busy samples per thread:"]
        out += [f"  {n:7d} {100 * n / busy:5.1f}%  {t}" for t, n in self.busy.most_common(10)]
        out += ["", "areas by self samples (where the interpreter was):"]
        out += [f"  {n:7d} {100 * n / busy:5.1f}%  {a}" for a, n in self.self_area.most_common()]
        out += ["", "areas by inclusive samples (on the stack):"]
        out += [f"  {n:7d} {100 * n / busy:5.1f}%  {a}" for a, n in self.incl_area.most_common()]
        out += ["", f"top {top} functions by self samples:"]
        out += [f"  {n:7d} {100 * n / busy:5.1f}%  {f}" for f, n in self.self_fn.most_common(top)]
        out += ["", f"top {top} functions by inclusive samples:"]
        out += [f"  {n:7d} {100 * n / busy:5.1f}%  {f}" for f, n in self.incl_fn.most_common(top)]
        return "\n".join(out) + "\n"


def _fn(s: tuple[str, str, int]) -> str:
    path = s[0]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for marker in ("/site-packages/", "/lib/python3", root):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib/python3"):
                path = path.split("/", 1)[-1]
            break
    return f"{s[1]} ({path}:{s[2]})"


class ThreadProfiler:
    """cProfile in every thread: the current one now, every thread started later on its first
    event."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self.started = time.monotonic()

    # threading.setprofile hook, once per new thread
    def _bootstrap(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()

    def start(self) -> None:
        threading.setprofile(self._bootstrap)
        prof = cProfile.Profile()
        self.profiles.append(prof)
        prof.enable()

    def stop(self) -> None:
        threading.setprofile(None)
        for prof in list(self.profiles):
            with _suppress():
                # Only disables the calling thread's; the others stop with the process.
                prof.disable()

    def report(self, top: int = 45) -> str:
        listing = io.StringIO()  # where `print_stats` writes
        stats: pstats.Stats | None = None
        for prof in self.profiles:
            with _suppress():
                prof.create_stats()
                stats = (pstats.Stats(prof, stream=listing) if stats is None
                         else stats.add(prof))
        if stats is None:
            return "no profile\n"
        if os.environ.get("PROFILE_STATS"):  # the merged pstats, for `python -m pstats` or snakeviz
            stats.dump_stats(os.environ["PROFILE_STATS"])
        # (file, line, name) -> (cc, nc, tt, ct, callers): Stats' table, which typeshed leaves out.
        raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
        idle = 0.0
        own_area: Counter[str] = Counter()
        for key, (_cc, _nc, tt, _ct, callers) in raw.items():
            file, _line, name = key
            if file == "~" and any(w in name for w in IDLE_BUILTINS):
                idle += tt
                continue
            if file != "~":
                own_area[_area(file)] += tt
                continue
            # A C function: charge its time to the areas of its callers, in proportion.
            total_ct = sum(v[2] if isinstance(v, tuple) else 0 for v in callers.values()) or 0
            if not callers or not total_ct:
                own_area["C code (caller unknown)"] += tt
                continue
            for caller, v in callers.items():
                share = (v[2] if isinstance(v, tuple) else 0) / total_ct
                own_area[_area(caller[0]) if caller[0] != "~" else "C code"] += tt * share
        total = sum(own_area.values()) or 1e-9
        out = [f"cProfile over {time.monotonic() - self.started:.1f}s, "
               f"{len(self.profiles)} threads: {total:.1f}s busy (profiler overhead included), "
               f"{idle:.1f}s waiting (not counted)", "",
               "busy time by area (C functions charged to the area of the Python code that called "
               "them):"]
        out += [f"  {t:8.2f}s {100 * t / total:5.1f}%  {a}" for a, t in own_area.most_common()
                if t >= 0.005]
        # Cumulative time of the entry points that matter, for orientation.
        stats.sort_stats("tottime").print_stats(top)
        out += ["", f"top {top} functions by own time:", _trim(listing.getvalue())]
        listing.seek(0)
        listing.truncate()
        stats.sort_stats("cumulative").print_stats(top)
        out += ["", f"top {top} functions by cumulative time:", _trim(listing.getvalue())]
        return "\n".join(out) + "\n"


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _trim(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    root = str(Path(__file__).resolve().parent.parent) + "/"
    site = sys.prefix + "/lib/python3.11/site-packages/"
    return "\n".join(line.replace(site, "").replace(root, "")
                     for line in lines[start:] if line.strip())


class GcTimer:
    """Pauses of the cyclic garbage collector (gc.callbacks): count, total and longest per
    generation."""

    def __init__(self) -> None:
        import gc

        self._gc = gc
        self.started = time.monotonic()
        self._t0 = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._t0)

    def start(self) -> None:
        self._gc.callbacks.append(self._cb)

    def stop(self) -> None:
        if self._cb in self._gc.callbacks:
            self._gc.callbacks.remove(self._cb)

    def report(self) -> str:
        out = [f"garbage collector over {time.monotonic() - self.started:.1f}s:"]
        for gen, ps in self.pauses.items():
            if ps:
                ps.sort()
                out.append(f"  generation {gen}: {len(ps)} collections, {sum(ps):.2f}s in total, "
                           f"p50 {1000 * ps[len(ps) // 2]:.1f} ms, max {1000 * ps[-1]:.0f} ms")
        big = sorted((p for ps in self.pauses.values() for p in ps), reverse=True)[:10]
        out.append("  longest pauses (ms): " + ", ".join(f"{1000 * p:.0f}" for p in big))
        return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("cprofile", "sample", "gc"), default="cprofile")
    p.add_argument("--interval", type=float, default=0.005, help="sampling interval (mode sample)")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    sys.argv = [a.script, *a.args]
    sys.path.insert(0, str(Path(a.script).resolve().parent))
    prof: StackSampler | ThreadProfiler | GcTimer = (
        StackSampler(a.interval) if a.mode == "sample"
        else GcTimer() if a.mode == "gc"
        else ThreadProfiler())
    written = False

    def write() -> None:
        nonlocal written
        if written:
            return
        written = True
        prof.stop()
        Path(a.out).write_text(prof.report())
        if isinstance(prof, StackSampler):
            Path(a.out + ".folded").write_text(
                "".join(f"{k} {v}\n" for k, v in prof.folded.most_common()))

    # The benchmarks leave through os._exit (bench/report.py `run`, the Temporal runtime's exit
    # race): write the report on the way out there too.
    hard_exit = os._exit

    def exit_after_writing(status: int) -> NoReturn:
        write()
        hard_exit(status)

    os._exit = exit_after_writing
    prof.start()
    try:
        runpy.run_path(a.script, run_name="__main__")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        write()


if __name__ == "__main__":
    main()
