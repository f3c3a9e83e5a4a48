"""Tabulate finished training runs as markdown (for zoo/README.md).

    python tools/zoo_table.py runs/quality > zoo/README.md

Every figure comes from the runs' own files: summary.json (metric, steps, wall time)
and the checkpoint's stored recipe (parameters; recurrent state from the analytic
per-block costs at the task's sequence length, batch 1, float32).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

from pulse.api import open_source
from pulse.assemble import build_model
from pulse.bench.machine import cpu_model
from pulse.summarize import summarize


def describe_model(spec) -> str:
    names = spec.mixer_names()
    kinds = [spec.mixers[n].kind for n in names]
    return " + ".join(kinds) + f" · d {spec.dim}"


def row(run: Path) -> str | None:
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    recipe = open_source(summary["checkpoint"]).recipe
    task = recipe.task
    seq_len = getattr(task, "seq_len", None) or 256
    model = build_model(recipe, device="meta")
    cost = summarize(model, seq_len=seq_len, table=False)
    value = summary["eval"].get(summary["metric"])
    setting = f"{task.kind}"
    if task.kind == "mqar":
        setting = f"MQAR {task.seq_len}/{task.num_kv_pairs}"
    return (
        f"| {run.name} | {setting} | {describe_model(recipe.model)} | {cost.total_params / 1e6:.2f}M "
        f"| {cost.state_bytes / 1024:.0f} KiB | {summary['metric']} {value:.4f} | {summary['step']}/{summary['steps']} "
        f"| {summary['elapsed_s'] / 60:.1f} min ({summary['stopped']}) |"
    )


def cards() -> None:
    from pulse.specs.load import card_names, card_path, load_recipe, read_table

    print("| card | params | description |")
    print("| --- | --- | --- |")
    for name in card_names():
        model = build_model(load_recipe(card_path(name)), device="meta")
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        description = read_table(card_path(name)).get("card", {}).get("description", "")
        print(f"| `{name}` | {params / 1e6:.2f}M | {description} |")


def main(root: str) -> None:
    runs = sorted(p for p in Path(root).iterdir() if p.is_dir())
    rows = [r for r in map(row, runs) if r]
    print("# The zoo\n")
    print("Each card is architecture only; a recipe uses one with `[model] from = \"NAME\"`.\n")
    cards()
    print("\n## Results\n")
    print(f"Measured with `tools/quality_runs.sh` then `python tools/zoo_table.py {root}`.")
    print(f"Machine: {cpu_model()}, {platform.machine()}, torch {torch.__version__}; two runs side by side, "
          "one torch thread each (2 cores), fp32, 10-minute wall-clock cap per run (`max_time`).")
    print("Metric is on the held-out set (MQAR: accuracy at query positions; text: bits per byte).")
    print("State: recurrent state per sequence at the task's length, batch 1, fp32.\n")
    print("| run | task | model | params | state | eval | steps | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quality")
