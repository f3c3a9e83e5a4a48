"""The results of a sweep: one row per grid point, the best point, sweep.md.

A row holds the point's final eval metric from its summary.json, its steps and wall
time, its parameters and its recurrent state in elements (the blocks' own analytic
`state_numel` at the task's sequence length, batch 1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def state_elements(recipe: Any) -> int:
    """Recurrent state of the model in elements, per sequence, at the task's length (the blocks' state_numel)."""
    import torch

    from pulse.assemble import build_model
    from pulse.summarize import block_costs

    task = recipe.task
    seq_len = getattr(task, "seq_len", None) or getattr(task, "max_len", None) or 1
    model = build_model(recipe, device="meta")
    # block_costs reports bytes at the given dtype and batch 1; float32 has 4 bytes per element
    return sum(b.state_bytes for b in block_costs(model, seq_len=seq_len, dtype=torch.float32)) // 4


def point_row(point: Any, status: str, error: str | None, metric: str) -> dict[str, Any]:
    from pulse.assemble import build_model
    from pulse.contract import count_params

    summary = read_summary(point.out_dir) if status != "failed" else None
    value = summary["eval"].get(metric) if summary else None
    return {
        "name": point.name, "dir": str(point.out_dir), "values": point.values, "status": status, "error": error,
        "value": value, "step": summary["step"] if summary else None, "steps": point.recipe.train.steps,
        "wall_s": summary["elapsed_s"] if summary else None,
        "params": summary["params"] if summary else count_params(build_model(point.recipe, device="meta")),
        "state_elements": state_elements(point.recipe),
    }


def best_row(rows: Sequence[dict[str, Any]], higher_is_better: bool) -> dict[str, Any] | None:
    """The point with the highest (or lowest) finite metric; None when no point has one."""
    scored = [r for r in rows if isinstance(r["value"], (int, float)) and math.isfinite(r["value"])]
    if not scored:
        return None
    return (max if higher_is_better else min)(scored, key=lambda r: r["value"])


def row_cells(r: dict[str, Any]) -> list[str]:
    """Metric, steps, wall time, params, state and status of one row, as text."""
    value = "—" if r["value"] is None else f"{r['value']:.4f}"
    wall = "—" if r["wall_s"] is None else f"{r['wall_s']:.1f} s"
    step = "—" if r["step"] is None else str(r["step"])
    # the first clause of an error (the whole message is in sweep.json)
    status = r["status"] + (": " + re.split(r"[;.] ", r["error"], maxsplit=1)[0] if r["error"] else "")
    return [value, f"{step}/{r['steps']}", wall, f"{r['params']:,}", f"{r['state_elements']:,}", status]


def markdown(doc: dict[str, Any]) -> str:
    """sweep.md: one row per point, the best one marked."""
    keys, m = list(doc["grids"]), doc["machine"]
    head = ["point", *keys, doc["metric"], "steps", "wall time", "params", "state (elements)", "status"]
    lines = [
        f"# Sweep of `{doc['recipe']}`", "", f"`{doc['command']}`", "",
        (f"Metric: {doc['metric']} on the held-out set after the last step "
         f"({'higher' if doc['higher_is_better'] else 'lower'} is better). "
         f"Machine: {m['device_name']} ({m['device']}), "
         f"{m['logical_cpus']} logical CPUs, {doc['workers']} worker(s) × {doc['threads']} threads, torch {m['torch']}"
         + (f"; load average {doc['load_at_start']:.1f} when the sweep started." if doc.get("load_at_start") is not None
            else ".")),
        "", "Every point ran with " + (" ".join(f"`--set {o}`" for o in doc.get("overrides", []))
                                        or "the recipe as it is") + ", then its grid values.",
        "", "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * (1 + len(keys)) + ["---:"] * 5 + ["---"]) + " |",
    ]
    for r in doc["points"]:
        cells = row_cells(r)
        name = r["name"]
        if name == doc["best"]:
            name, cells[0] = f"{name} **(best)**", f"**{cells[0]}**"
        row = [name, *(r["values"][k] for k in keys), *cells]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines) + "\n"
