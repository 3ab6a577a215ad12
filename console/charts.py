"""The dashboard's charts as PNG bytes (matplotlib's Agg backend, no display), drawn from the
portfolio report: roll rates by stage, recovery over time, cases per stage reached and by state."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Final

from service.report_figures import ROLL_TRANSITIONS, STAGE_RANKS, Report, SeriesPoint

CHARTS: Final = ("rolls", "recovery", "stages", "states")


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
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()
