"""A dependency-free sampling profiler over every Python thread of a process.

    python -m bench.stack_sampler --out profile.txt worker.py [args...]

Runs the script as `__main__` while a thread reads `sys._current_frames()` every `--interval`
seconds; at exit (the script returns, or SIGINT ends it) it writes a text report: busy samples
per thread, the functions and the areas (our workflow, activities, the SDK's sandbox, converters,
drivers...) by self and by inclusive samples, and `<out>.folded` with one collapsed stack per line
for a flame graph. Threads waiting in select, queue.get or Condition.wait count as idle. Time in C
code is charged to the Python function that called it (protobuf, AES, SQL drivers).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path

IDLE = {("selectors.py", "select"), ("threading.py", "wait"), ("thread.py", "_worker"),
        ("queue.py", "get"), ("base_events.py", "_run_once"), ("threading.py", "_wait_for_tstate_lock")}

# (area, substring of the file path), first match wins, checked from the innermost frame outwards
# for "self" and over every frame for "inclusive".
AREAS = [
    ("our workflow: collection_workflow.py", "/workflows/collection_workflow.py"),
    ("our workflow: compliance/clock/ledger/negotiation", "/workflows/"),
    ("our activities", "/activities/"),
    ("our codec (AES-GCM)", "/infra/codec.py"),
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
]


def _area(filename: str) -> str:
    for name, needle in AREAS:
        if needle in filename:
            return name
    return "other python"


class StackSampler:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples = 0
        self.busy = Counter()  # thread name -> busy samples
        self.self_fn = Counter()
        self.incl_fn = Counter()
        self.self_area = Counter()
        self.incl_area = Counter()
        self.folded = Counter()
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
                f = frame
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
        out = [f"stack samples every {self.interval * 1000:g} ms over {wall:.1f}s: {self.samples} rounds, "
               f"{busy} busy thread-samples ({busy * self.interval:.1f}s of Python running)", "",
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
    for marker in ("/site-packages/", "/lib/python3", str(Path(__file__).resolve().parent.parent) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib/python3"):
                path = path.split("/", 1)[-1]
            break
    return f"{s[1]} ({path}:{s[2]})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.005)
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    sys.argv = [a.script, *a.args]
    sys.path.insert(0, str(Path(a.script).resolve().parent))
    sampler = StackSampler(a.interval)
    sampler.start()
    try:
        runpy.run_path(a.script, run_name="__main__")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sampler.stop()
        Path(a.out).write_text(sampler.report())
        Path(a.out + ".folded").write_text(
            "".join(f"{k} {v}\n" for k, v in sampler.folded.most_common()))


if __name__ == "__main__":
    main()
