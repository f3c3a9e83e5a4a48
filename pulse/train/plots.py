"""PNG plots of a run's metrics.jsonl: loss and the task metric against step and wall time."""

from __future__ import annotations

import io
from pathlib import Path

from pulse.paths import atomic_write
from pulse.storage.runfiles import METRICS
from pulse.storage.state import read_metrics

STYLES = {"train": {"linestyle": "-", "linewidth": 1.2}, "eval": {"linestyle": "-", "marker": "o", "markersize": 3}}


def plot_run(run_dir: str | Path, metric: str) -> list[Path]:
    """Write loss.png and <metric>.png into run_dir (two panels each: vs step, vs wall time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS)
    written = []
    for quantity in dict.fromkeys(("loss", metric)):
        fig = Figure(figsize=(11, 4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        drawn = False
        for ax, x_key, x_label in zip(axes, ("step", "time"), ("step", "wall time (s)")):
            for split, style in STYLES.items():
                points = [(r[x_key], r[quantity]) for r in records
                          if r.get("split") == split and isinstance(r.get(quantity), (int, float))]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, label=split, **style)
                    drawn = True
            ax.set_xlabel(x_label)
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            values = [y for line in ax.lines for y in line.get_ydata()]
            if quantity == "loss" and values and min(values) > 0 and max(values) > 10 * min(values):
                ax.set_yscale("log")
            if ax.lines:
                ax.legend()
        if not drawn:
            continue
        fig.suptitle(f"{run_dir.name}: {quantity}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        path = run_dir / f"{quantity}.png"
        atomic_write(path, lambda tmp, data=buffer.getvalue(): Path(tmp).write_bytes(data))
        written.append(path)
    return written
