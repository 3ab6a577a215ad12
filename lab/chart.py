"""The backtest as a picture: one panel per headline figure, a bar per policy with its interval.
PNG or SVG, by the file's extension."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt

from lab.backtest import Backtest
from lab.intervals import Estimate

PANELS: Final = (("recovery_rate", "recovery rate"), ("cure_rate", "cure rate"),
                 ("median_days_to_cure", "median days to cure"),
                 ("contacts_per_cure", "contacts per cure"))
FORMATS: Final = (".png", ".svg")


def write_chart(bt: Backtest, path: str | Path) -> Path:
    target = Path(path)
    if target.suffix.lower() not in FORMATS:
        raise ValueError(f"{target}: a chart is .png or .svg")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6))
    labels = [Path(r.label).stem if "/" in r.label or r.label.endswith(".toml") else r.label
              for r in bt.runs]
    for ax, (name, title) in zip(axes, PANELS, strict=True):
        found = [_find(r.estimates, name) for r in bt.runs]
        values = [float(e.value) if e and e.value is not None else 0.0 for e in found]
        low = [v - float(e.low) if e and e.low is not None else 0.0
               for v, e in zip(values, found, strict=True)]
        high = [float(e.high) - v if e and e.high is not None else 0.0
                for v, e in zip(values, found, strict=True)]
        ax.bar(labels, values, yerr=[low, high], capsize=6,
               color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(values)])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"{bt.loans} loans, {bt.horizon_days} days, model {bt.model}, seed {bt.seed} "
                 "(bars: 95% intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target


def _find(estimates: list[Estimate], name: str) -> Estimate | None:
    return next((e for e in estimates if e.name == name), None)
