"""Held-out bits per byte of the Transformer, the hybrid and pure PULSE at the same steps, one command.

    python tools/text_table.py                       # run the three sweeps into runs/text/, write docs/text.md
    python tools/text_table.py --read-only           # tabulate the sweeps already there, train nothing
    python tools/text_table.py --lrs 1e-3,3e-3,6e-3 --set train.steps=400 --note "…"

Each model is one `pulse sweep` over the learning rates (a rerun skips finished points and
resumes unfinished ones) into OUT/<model>/, all with the same task (the `text` task of
recipes/text-hybrid.toml: the Python standard library's sources, validation on held-out
files), the same steps and batch, and parameter counts within 10 % of each other:

- transformer: recipes/text-hybrid.toml with `model.layout=["attn"]`;
- hybrid: recipes/text-hybrid.toml as shipped (PULSE delta-rule slot layers + one attention layer in three);
- pulse: recipes/text-pulse.toml (PULSE layers only).

Written: DOCS/text.md, the best point of each sweep (bits per byte, lr, params, recurrent
state at the task's length, steps, wall time, machine) and how far each trails the
Transformer; every point of every sweep stays in its sweep.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recall_table import add_common_arguments, machine, read_sweep, run_tool

from pulse.checkpoint import atomic_write_text
from pulse.errors import PulseError
from pulse.train.sweep import sweep
from pulse.train.sweep_report import best_row

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MODELS = {  # name → (recipe, overrides, description)
    "transformer": ("text-hybrid.toml", ['model.layout=["attn"]'], "Transformer: 3 rotary attention layers"),
    "hybrid": ("text-hybrid.toml", [], "hybrid: pulse (delta) + pulse (delta) + attention"),
    "pulse": ("text-pulse.toml", [], "pure PULSE: 3 pulse (delta) layers, no attention"),
}


def collect(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in MODELS:
            raise PulseError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}.")
        recipe, sets, description = MODELS[name]
        sweep_dir = Path(args.out) / name
        if args.read_only:
            doc = read_sweep(sweep_dir, name, notes)
            if doc is None:
                continue
        else:
            result = sweep(RECIPES / recipe, [f"train.lr={args.lrs}"], overrides=[*sets, *args.set], out=sweep_dir,
                           parallel=args.parallel, say=lambda text, tag=f"[{name}]": print(tag, text, flush=True))
            doc = json.loads(result.json_path.read_text(encoding="utf-8"))
        best = best_row(doc["points"], doc["higher_is_better"])
        if best is None:
            notes.append(f"{name}: no point of the sweep in {sweep_dir} finished.")
            continue
        rows.append({"name": name, "description": description, "recipe": recipe, "row": best,
                     "lrs": doc["grids"]["train.lr"], "machine": machine(doc), "load": doc.get("load_at_start"),
                     "overrides": doc["overrides"]})
    return rows, notes


def markdown(rows: list[dict[str, Any]], notes: list[str], command: str, note: str | None) -> str:
    machines = sorted({r["machine"] for r in rows})
    loads = [r["load"] for r in rows if r["load"] is not None]
    base = next((r["row"]["value"] for r in rows if r["name"] == "transformer"), None)
    lines = [
        "# Byte-level text: Transformer, hybrid and pure PULSE", "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}." + (f" **{note}**" if note else ""),
        "",
        "Held-out bits per byte (validation on files never trained on) of the Python standard library's sources, "
        "context 256, the same steps and batch for every model, parameters within 10 % of each other. Each row is "
        f"the best point of a learning-rate sweep ({', '.join(sorted({lr for r in rows for lr in r['lrs']}, key=float))}); "
        "every point is in the sweep's sweep.md. State: the recurrent state per sequence at length 256 in elements "
        "(attention counts its KV cache). Machine: " + "; ".join(machines) + "."
        + (f" Load average when the sweeps started: {min(loads):.1f}–{max(loads):.1f}." if loads else ""), "",
        "| model | recipe | params | state (elements) | bits/byte | vs Transformer | best lr | steps | wall time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        b = r["row"]
        rel = "" if base is None or r["name"] == "transformer" else f"{100 * (b['value'] / base - 1):+.1f} %"
        recipe = r["recipe"] + (" " + " ".join(f"`--set {s}`" for s in MODELS[r["name"]][1]) if MODELS[r["name"]][1] else "")
        lines.append(f"| {r['description']} | {recipe} | {b['params']:,} | {b['state_elements']:,} | {b['value']:.4f} "
                     f"| {rel} | {b['values']['train.lr']} | {b['step']}/{b['steps']} | {b['wall_s']:.0f} s |")
    if rows:
        lines += ["", "Overrides of every sweep: " + ", ".join(f"`{o}`" for o in rows[0]["overrides"]
                                                              if not o.startswith("model.")) + "."]
    if notes:
        lines += ["", "Not in the table:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"models to compare ({', '.join(MODELS)})")
    parser.add_argument("--lrs", default="1e-3,3e-3,6e-3", help="learning rates of each sweep")
    parser.add_argument("--set", action="append", default=[], help="a recipe override for every sweep (repeatable)")
    add_common_arguments(parser, out="runs/text", docs="text.md is")

    def write(rows: list[dict[str, Any]], notes: list[str], command: str, args: argparse.Namespace,
              docs: Path) -> None:
        atomic_write_text(docs / "text.md", markdown(rows, notes, command, args.note))
        print(f"wrote {docs / 'text.md'} ({len(rows)} rows; {len(notes)} notes)")

    return run_tool(parser, argv, "text_table", collect, write)


if __name__ == "__main__":
    sys.exit(main())
