"""Every benchmark in sequence, at the sizes `make bench` uses, then one combined table.

    python -m bench.run_all              # about 25 minutes on a quiet 2-core machine (see below)
    python -m bench.run_all --quick      # small sizes: checks that everything runs (a few minutes)
    python -m bench.run_all --only lifecycle,simulation

Each benchmark runs in a process of its own (`python -m bench.<name> ...`) with a time limit, and
merges its figures into bench/results/latest.json; the combined table is printed from that file.
A benchmark that fails or overruns is reported and the others still run.

Most of the time goes into opening 10,000 cases for open_cases, bare and ours: the dev server's
SQLite is the bottleneck there (our worker spends about 18 ms of CPU to open a case, bare 9 ms);
see bench/README.md for where the time goes. The combined table also shows `open_cases_50k` when
latest.json holds it (a separate run, with its own date).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, log
from bench.report import RESULTS_FILE, load_now, machine_info, print_table

# name, full-size arguments, quick arguments, time limit (s) at full size. The memory benchmark runs
# on open_cases' open cases (--memory-sizes) so they are opened once; `--only memory` runs it alone.
PLAN: list[tuple[str, list[str], list[str], int]] = [
    ("start_rate", ["--n", "2000"], ["--n", "300"], 600),
    ("lifecycle", ["--n", "200"], ["--n", "30"], 900),
    ("simulation", ["--n", "20", "--concurrent", "30", "--recorded", "3"],
     ["--n", "3", "--concurrent", "5", "--recorded", "1"], 600),
    ("operator_queries", ["--book", "100000", "--cases", "1000", "--samples", "40"],
     ["--book", "5000", "--cases", "200", "--samples", "20"], 900),
    ("api_rates", ["--n", "10000"], ["--n", "300", "--payments", "200", "--samples", "30"], 3600),
    # 10,000 open cases, and caches of 100 to 2,500 of them, fit `make bench` in about 25 minutes:
    # opening a case is bound by the dev server's SQLite (10,000 settle in ~10 minutes ours, ~6
    # bare).
    # The one-machine size runs on its own (~1 hour):
    # `python -m bench.open_cases --n 50000 --no-bare --key open_cases_50k`.
    ("open_cases", ["--n", "10000", "--samples", "200", "--memory-sizes", "100,1000,2500",
                    "--memory-samples", "100"],
     ["--n", "1000", "--samples", "50", "--memory-sizes", "50,200", "--memory-samples", "30"],
     3600),
    # The strategy lab (issue 21): a 10,000-loan book under two policies, and the lab's timelines
    # against the workflow's on 200 loans.
    ("lab_speed", ["--n", "10000", "--sample", "50"], ["--n", "1000", "--sample", "5"], 900),
    ("lab_equivalence", ["--n", "200"], ["--n", "20"], 900),
    # Temporal actions of one recorded default-ladder lifecycle against its minimum (issue 21).
    ("actions", [], [], 300),
]
STANDALONE: list[tuple[str, list[str], list[str], int]] = [
    ("memory", ["--sizes", "100,1000,2500", "--samples", "100"],
     ["--sizes", "50,200", "--samples", "30"], 3600),
]
# What the combined table shows, in this order.
TABLE_ORDER = ["start_rate", "lifecycle", "simulation", "operator_queries", "api_rates",
               "open_cases", "memory", "open_cases_50k", "lab_speed", "lab_equivalence", "actions"]


def run_one(name: str, args: list[str], limit: int) -> tuple[int | None, float]:
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    log(f"=== {name}: {' '.join(cmd[1:])} (time limit {limit}s)")
    env = dict(os.environ)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + extra if extra else "")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        log(f"{name}: over its time limit; stopping it")
        code = None
    except KeyboardInterrupt:
        log(f"{name}: interrupted; stopping it")
        _stop(proc)
        raise
    if code is None:
        _stop(proc)
    return code, time.monotonic() - t0


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT (the benchmark stops what it started), then SIGKILL on the whole group."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, to check that everything runs")
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    a = p.parse_args()
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    plan = PLAN + [x for x in STANDALONE if x[0] in only]
    unknown = only - {name for name, *_ in plan}
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    log(f"machine: {json.dumps(machine_info())}")
    log(f"load now: {load_now()}  (the figures mean little if other work shares the cores)")
    t0 = time.monotonic()
    outcome: dict[str, str] = {}
    for name, full, quick, limit in plan:
        if only and name not in only:
            continue
        args = quick if a.quick else full
        code, secs = run_one(name, args, limit if not a.quick else max(300, limit // 2))
        # 134/139 after the figures are written: the Temporal runtime's exit race
        # (temporal-notes.md).
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        outcome[name] = f"{status} in {secs:.0f}s"
        log(f"{name}: {outcome[name]}")
    log(f"all done in {(time.monotonic() - t0) / 60:.1f} min")
    try:
        data = json.loads(RESULTS_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    combined: dict[str, dict[str, Any]] = {}
    for name in TABLE_ORDER:
        if name not in data:
            continue
        for fig, f in data[name].get("figures", {}).items():
            combined[f"{name}: {fig}"] = f
    print_table(f"bench results ({RESULTS_FILE.relative_to(ROOT)})", combined,
                [f"{k}: {v}" for k, v in outcome.items()])
    sys.exit(0 if all(v.startswith("ok") for v in outcome.values()) else 1)


if __name__ == "__main__":
    main()
