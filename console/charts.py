"""The dashboard's charts as PNG bytes (matplotlib's Agg backend, no display), drawn from the
portfolio report: roll rates by stage, recovery over time, cases per stage reached and by state,
and compliance breaches by the rule broken."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import TYPE_CHECKING, Final

from service.report_figures import ROLL_TRANSITIONS, STAGE_RANKS, Report, SeriesPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHARTS: Final = ("rolls", "recovery", "stages", "states", "breaches")


def _label(name: str, version: str, currency: str) -> str:
    return f"{name}@{version} {currency}"


def render(report: Report, chart: str) -> bytes:
    """One chart; its caption is the page's (in the reader's language: the PNG holds no text
    a Latin-only font could not draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if chart == "breaches":
        _breaches(ax, report)
        return _png(fig)
    versions = report.by_policy_version()
    width = 0.8 / max(len(versions), 1)
    if chart in ("rolls", "stages", "states"):
        keys: tuple[str, ...] = (ROLL_TRANSITIONS if chart == "rolls" else STAGE_RANKS
                                 if chart == "stages"
                                 else tuple(sorted({k for v in versions for k in v.by_state})))
        for i, v in enumerate(versions):
            if chart == "rolls":
                values = [float(x or 0) for x in v.roll_rates.values()]
            elif chart == "stages":
                values = [float(v.reached.get(k, 0)) for k in keys]
            else:
                values = [float(v.by_state.get(k, 0)) for k in keys]
            xs = [j + (i - (len(versions) - 1) / 2) * width for j in range(len(keys))]
            ax.bar(xs, values, width=width, label=_label(v.policy_name, v.policy_version,
                                                          v.currency))
        ax.set_xticks(range(len(keys)), [k.replace("->", "\n→") for k in keys], fontsize=7)
        if chart == "rolls":
            ax.set_ylim(0, 1)
    else:
        series: dict[tuple[str, str, str], list[SeriesPoint]] = defaultdict(list)
        for p in report.series:
            series[(p.policy_name, p.policy_version, p.currency)].append(p)
        for key, points in sorted(series.items()):
            pts = [p for p in points if p.recovery_rate is not None]
            ax.plot([p.month.toordinal() for p in pts], [float(p.recovery_rate or 0) for p in pts],
                    marker="o", markersize=3, label=_label(*key))
        months = sorted({p.month for p in report.series})
        ax.set_xticks([m.toordinal() for m in months], [f"{m:%Y-%m}" for m in months])
        ax.set_ylim(bottom=0)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    return _png(fig)


def _breaches(ax: Axes, report: Report) -> None:
    """Breaches of the whole portfolio by rule (the report does not split them by policy or
    time), the most frequent on top; an empty book draws the axes with a zero."""
    rules = list(report.breaches.items())
    ys = range(len(rules))
    ax.barh(ys, [n for _, n in rules], height=0.6, color="#c0392b")
    ax.set_yticks(ys, [r for r, _ in rules], fontsize=7)
    ax.set_ylim(max(len(rules), 4) - 0.4, -0.6)  # top down; a few rules keep slim bars
    for y, (_, n) in zip(ys, rules, strict=True):
        ax.annotate(str(n), (n, y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7)
    if not rules:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "0", transform=ax.transAxes, ha="center", va="center", fontsize=14,
                color="#556")
    ax.set_xlim(0, max((n for _, n in rules), default=1) * 1.15)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()
