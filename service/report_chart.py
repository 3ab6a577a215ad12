"""The portfolio report drawn as a PNG: roll rates per policy version, recovery over time."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from service.errors import BadInput
from service.report_figures import ROLL_TRANSITIONS, Report, SeriesPoint


def _cannot(path: Path, reason: str) -> BadInput:
    return BadInput("chart", f"cannot write {path}: {reason}")


def check_chart_target(path: Path) -> Path:
    """Refuse, before any figure is read, a chart path that cannot be written: a directory, a
    parent that is a file, a place without write permission. Leaves nothing behind."""
    path = Path(path)
    if path.is_dir():
        raise _cannot(path, "it is a directory; name a file such as report.png")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _cannot(path, f"{ancestor} is not a directory")
    if ancestor != path.parent:
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise _cannot(path, f"no permission to create folders in {ancestor}")
        return path
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise _cannot(path, exc.strerror or type(exc).__name__) from None
    if not existed:
        path.unlink(missing_ok=True)
    return path


def render_chart(report: Report, path: Path) -> Path:
    """A PNG: roll rate per transition for each policy version (bars), and cumulative recovery
    by month for each policy version (lines)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(12, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    rolls_ax, recovery_ax = fig.subplots(1, 2)
    versions = report.by_policy_version()
    width = 0.8 / max(len(versions), 1)
    for i, v in enumerate(versions):
        values = [float(x) if x is not None else 0.0 for x in v.roll_rates.values()]
        xs = [j + (i - (len(versions) - 1) / 2) * width for j in range(len(ROLL_TRANSITIONS))]
        rolls_ax.bar(xs, values, width=width,
                     label=f"{v.policy_name}@{v.policy_version} {v.currency}")
    rolls_ax.set_xticks(range(len(ROLL_TRANSITIONS)),
                        [t.replace("->", "\n→ ") for t in ROLL_TRANSITIONS], fontsize=8)
    rolls_ax.set_ylim(0, 1)
    rolls_ax.set_ylabel("share of the cases entering the stage that moved on")
    rolls_ax.set_title("Roll rate per transition")
    series: dict[tuple[str, str, str], list[SeriesPoint]] = defaultdict(list)
    for p in report.series:
        series[(p.policy_name, p.policy_version, p.currency)].append(p)
    for (name, version, currency), points in sorted(series.items()):
        pts = [p for p in points if p.recovery_rate is not None]
        recovery_ax.plot([p.month for p in pts], [float(p.recovery_rate or 0) for p in pts],
                         marker="o", markersize=3, label=f"{name}@{version} {currency}")
    recovery_ax.set_ylim(bottom=0)
    recovery_ax.set_ylabel("collected / placed, to date")
    recovery_ax.set_title("Recovery over time")
    recovery_ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for ax in (rolls_ax, recovery_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"Collections portfolio as of {report.as_of:%Y-%m-%d %H:%M} UTC")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=110)
    except OSError as exc:  # a parent that is a file, a directory as the target, no permission
        raise _cannot(path, exc.strerror or type(exc).__name__) from None
    return path
