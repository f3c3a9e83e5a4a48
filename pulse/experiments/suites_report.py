"""The results of `pulse benchmark`: benchmark.json (every run), benchmark.md (one table: tasks × systems,
best learning rate per cell, and the average) and benchmark.png (the same as grouped bars)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pulse.experiments.sweep_report import best_row, point_row


def document(cells: Sequence[Any], status: dict[str, tuple[str, str | None]], *, suite: str, budget: float,
             command: str, load: float | None) -> dict[str, Any]:
    """Everything benchmark.md and benchmark.png show, and every run's row (pulse sweep's row format)."""
    import torch

    from pulse.bench.machine import describe
    from pulse.tasks import task_of

    systems = list(dict.fromkeys(c.system for c in cells))
    tasks = list(dict.fromkeys(c.task for c in cells))
    out_cells = []
    for cell in cells:
        rows, best, metric = [], None, "accuracy"
        if cell.points:
            task = task_of(cell.points[0].recipe)
            metric = task.metric
            rows = [point_row(p, *status.get(p.name, ("not run", None)), metric) for p in cell.points]
            best = best_row(rows, task.higher_is_better)
        out_cells.append({"system": cell.system, "task": cell.task, "metric": metric, "skipped": cell.skipped,
                          "best": best, "runs": rows})
    averages = {}
    for system in systems:
        values = [c["best"]["value"] for c in out_cells if c["system"] == system and c["best"] is not None]
        complete = len(values) == sum(1 for c in out_cells if c["system"] == system and not c["skipped"])
        averages[system] = {"value": sum(values) / len(values) if values else None, "tasks": len(values),
                            "complete": complete}
    first = next((p for c in cells for p in c.points), None)
    device = "cuda" if first and first.recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    return {"suite": suite, "budget": budget, "command": command, "systems": systems, "tasks": tasks,
            "machine": describe(device), "load_at_start": load, "cells": out_cells, "average": averages}


def _cell(doc: dict[str, Any], system: str, task: str) -> dict[str, Any]:
    return next(c for c in doc["cells"] if c["system"] == system and c["task"] == task)


def _text(cell: dict[str, Any]) -> str:
    if cell["skipped"]:
        return f"— ({cell['skipped']})"
    best = cell["best"]
    if best is None:
        failed = [r for r in cell["runs"] if r["status"] == "failed"]
        return "— (failed)" if failed else "—"
    return f"{best['value']:.4f} (lr {best['values']['train.lr']}, {best['step']} steps, {best['wall_s']:.0f} s)"


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# Benchmark: the {doc['suite']} suite", "", f"`{doc['command']}`", "",
        f"Budget {doc['budget']:g} (× each task's steps). Each cell: the held-out accuracy of the best learning rate "
        f"tried, its steps and wall time. Machine: {m['device_name']} ({m['device']}), {m['logical_cpus']} logical "
        f"CPUs, torch {m['torch']}"
        + (f"; load average {doc['load_at_start']:.1f} at the start." if doc.get("load_at_start") is not None else "."),
        "", "| task | " + " | ".join(doc["systems"]) + " |",
        "| --- | " + " | ".join("---:" for _ in doc["systems"]) + " |",
    ]
    for task in doc["tasks"]:
        lines.append(f"| {task} | " + " | ".join(_text(_cell(doc, s, task)) for s in doc["systems"]) + " |")
    averages = []
    for system in doc["systems"]:
        a = doc["average"][system]
        value = "—" if a["value"] is None else f"**{a['value']:.4f}**"
        averages.append(value + ("" if a["complete"] else f" ({a['tasks']} tasks)"))
    lines.append("| **average** | " + " | ".join(averages) + " |")
    lines += ["", "Every run (system/task/lr: accuracy, steps, wall time, parameters, recurrent state in elements):",
              ""]
    for cell in doc["cells"]:
        for r in cell["runs"]:
            value = "—" if r["value"] is None else f"{r['value']:.4f}"
            wall = "—" if r["wall_s"] is None else f"{r['wall_s']:.0f} s"
            lines.append(f"- `{r['name']}`: {value}, {r['step'] or 0}/{r['steps']} steps, {wall}, "
                         f"{r['params']:,} params, state {r['state_elements']:,}, "
                         f"{'finished before' if r['status'] == 'skipped' else r['status']}")
    return "\n".join(lines) + "\n"


def bar_chart(doc: dict[str, Any]) -> bytes:
    """Grouped bars: one group per task (and the average), one bar per system."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [*doc["tasks"], "average"]
    fig = Figure(figsize=(max(6, 1.4 * len(groups) * max(1, len(doc["systems"])) / 2 + 2), 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(doc["systems"]))
    for i, system in enumerate(doc["systems"]):
        values = []
        for task in doc["tasks"]:
            best = _cell(doc, system, task)["best"]
            values.append(best["value"] if best is not None else math.nan)
        values.append(doc["average"][system]["value"] if doc["average"][system]["value"] is not None else math.nan)
        xs = [g + (i - (len(doc["systems"]) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=system)
        for bar, v in zip(bars, values):
            ax.annotate("—" if math.isnan(v) else f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.08)
    ax.set_title(f"{doc['suite']} suite, budget {doc['budget']:g} ({doc['machine']['device_name']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write(root: Path, doc: dict[str, Any]) -> list[Path]:
    from pulse.paths import atomic_write, atomic_write_text

    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "benchmark.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(root / "benchmark.md", markdown(doc))
    atomic_write(root / "benchmark.png", lambda tmp, data=bar_chart(doc): Path(tmp).write_bytes(data))
    return [root / "benchmark.json", root / "benchmark.md", root / "benchmark.png"]
