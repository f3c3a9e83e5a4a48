"""Sweeps: one recipe, a grid of overrides, one training run per grid point, one table.

    pulse sweep recipes/mqar-pulse.toml --grid train.lr=3e-4,1e-3,3e-3 --grid model.dim=64,128

The points are the cartesian product of the grids. Every point's recipe is validated
(the recipe file, then --set, then the point's overrides) before anything runs, so a
typo fails at once with the usual dotted-path message. Each point trains into
OUT/<key=value,…> with the ordinary training loop, in this process one after another
or as N worker processes (`--parallel N`), each pinned to its share of the CPU threads.
A point whose run directory already holds a finished run is skipped; one with a
checkpoint continues from it (exact resume). A point that fails (a diverged loss at a
high learning rate, say) is recorded as failed and the others go on. At the end every
point's final eval metric, with steps, wall time, parameters and recurrent state, goes
to OUT/sweep.json and OUT/sweep.md; the best point is the one with the highest accuracy
(or lowest bits per byte, whichever the task's metric is).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulse.errors import PulseError
from pulse.experiments.sweep_report import best_row, markdown, point_row, read_summary
from pulse.experiments.sweep_workers import cpus, resume_point, run_parallel

FINAL = ("done", "already complete", "time limit")


@dataclass
class Point:
    """One grid point: its overrides (grid key → value text), its validated recipe, its run directory."""

    name: str
    values: dict[str, str]
    recipe: Any
    out_dir: Path

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values.items()]


def split_values(text: str) -> list[str]:
    """`1e-3,3e-3` → ["1e-3", "3e-3"]; commas inside [...], {...} or quotes do not split."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(text: str) -> tuple[str, list[str]]:
    """`train.lr=3e-4,1e-3` → ("train.lr", ["3e-4", "1e-3"])."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = split_values(raw) if sep else []
    if not sep or not key or not all(key.split(".")) or not all(values):
        raise PulseError(f"--grid `{text}`: expected DOTTED.PATH=V1,V2,…, e.g. --grid train.lr=3e-4,1e-3,3e-3.")
    if len(set(values)) != len(values):
        raise PulseError(f"--grid `{text}`: a value is listed twice; list each value once.")
    return key, values


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key ends with (train.lr → lr)."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(o != key and (o == tail or o.endswith("." + tail)) for o in keys):
                break
        short[key] = tail
    return short


def point_name(values: dict[str, str]) -> str:
    """A stable, readable directory name: `lr=1e-3,dim=64`; a list value `["pulse","attn"]` reads `pulse+attn`."""
    short = _short_keys(list(values))

    def clean(value: str) -> str:
        value = re.sub(r"[\[\]\"'\s]", "", value).replace(",", "+")
        return re.sub(r"[^\w.+-]", "_", value) or "_"

    return ",".join(f"{short[k]}={clean(v)}" for k, v in values.items())


def plan(recipe_path: str | Path, grids: Sequence[str], *, overrides: Sequence[str] = (),
         out: str | Path | None = None) -> list[Point]:
    """Every grid point, validated; raises PulseError (nothing created) if any point's recipe is invalid."""
    from pulse.assemble import build_model
    from pulse.specs.load import load_recipe
    from pulse.tasks import task_of

    if not grids:
        raise PulseError("a sweep needs at least one --grid KEY=V1,V2,…, e.g. --grid train.lr=3e-4,1e-3,3e-3.")
    parsed = [parse_grid(g) for g in grids]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        twice = ", ".join(sorted({k for k in keys if keys.count(k) > 1}))
        raise PulseError(f"--grid: a key appears in two grids ({twice}); give each key one --grid with all its values.")
    root = Path(out) if out is not None else Path("runs") / f"sweep-{Path(recipe_path).stem}"
    points = []
    for combo in itertools.product(*(values for _, values in parsed)):
        values = dict(zip(keys, combo))
        recipe = load_recipe(recipe_path, [*overrides, *(f"{k}={v}" for k, v in values.items())])
        if recipe.task is None:
            raise PulseError(f"{recipe_path}: the recipe has no [task] table, so there is nothing to sweep; "
                             "add one, e.g. [task] kind = \"mqar\".")
        task_of(recipe).check_model(build_model(recipe, device="meta"))
        name = point_name(values)
        if any(p.name == name for p in points):
            raise PulseError(f"--grid: two points would share the run directory `{name}`; list distinct values.")
        points.append(Point(name=name, values=values, recipe=recipe, out_dir=root / name))
    return points


def finished(point: Point) -> bool:
    """The run directory holds a finished run of this point's model and task (its summary says so)."""
    from pulse.storage.rundir import RunDir

    summary = read_summary(point.out_dir)
    if summary is None or summary.get("stopped") not in FINAL:
        return False
    stored = RunDir(point.out_dir, writer=False).stored_recipe() or {}
    current = point.recipe.to_dict()
    if any(stored.get(k) != current.get(k) for k in ("model", "task")):
        return False
    spec = point.recipe.train
    return summary["step"] >= spec.steps or (spec.max_time is not None and summary["elapsed_s"] >= spec.max_time)


def run_inline(point: Point, reporter: Any = None) -> str | None:
    """Train one point in this process; the error message if it failed, else None."""
    from pulse.train.loop import train

    try:
        train(point.recipe, point.out_dir, resume=resume_point(point), reporter=reporter)
    except PulseError as err:
        return str(err)
    return None


@dataclass
class SweepResult:
    root: Path
    metric: str
    higher_is_better: bool
    rows: list[dict[str, Any]]
    best: str | None
    json_path: Path
    md_path: Path


def sweep(recipe_path: str | Path, grids: Sequence[str], *, overrides: Sequence[str] = (),
          out: str | Path | None = None, parallel: int = 1, reporter: Callable[[Point], Any] | None = None,
          say: Callable[[str], None] = print, command: str | None = None) -> SweepResult:
    """Validate every point, train the unfinished ones, write sweep.json and sweep.md; see the module docstring."""
    from pulse.specs.load import find_recipe
    from pulse.tasks import task_of

    if parallel < 1:
        raise PulseError(f"--parallel must be at least 1, got {parallel}.")
    recipe_path = find_recipe(recipe_path)  # a path, or a zoo card or shipped recipe name
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other jobs on the machine, for the record
    points = plan(recipe_path, grids, overrides=overrides, out=out)
    tasks = {(t.metric, t.higher_is_better) for t in (task_of(p.recipe) for p in points)}
    if len(tasks) > 1:
        raise PulseError("the grid changes the task's metric between points; a sweep compares one metric, so sweep "
                         "each task separately.")
    (metric, higher), = tasks
    status: dict[str, tuple[str, str | None]] = {}
    todo = []
    for point in points:
        if finished(point):
            status[point.name] = ("skipped", None)
            say(f"{point.name}: finished before, skipped")
        else:
            todo.append(point)

    def done(point: Point, error: str | None) -> None:
        status[point.name] = ("failed", error) if error else ("trained", None)
        say(f"{point.name}: {'failed: ' + error if error else 'trained'}")

    workers = min(parallel, max(len(todo), 1))
    if workers > 1:
        run_parallel(recipe_path, todo, overrides, workers, done, say)
    for point in todo if workers == 1 else ():
        say(f"{point.name}: training into {point.out_dir}")
        done(point, run_inline(point, reporter(point) if reporter else None))

    rows = [point_row(p, *status[p.name], metric) for p in points]
    best = best_row(rows, higher)
    doc = {
        "recipe": str(recipe_path), "overrides": list(overrides), "grids": dict(parse_grid(g) for g in grids),
        "metric": metric, "higher_is_better": higher, "best": best["name"] if best else None,
        **_machine(points[0].recipe, workers), "load_at_start": load,
        "command": command or shlex.join(["pulse", "sweep", str(recipe_path), *(f"--grid={g}" for g in grids)]),
        "points": rows,
    }
    root = points[0].out_dir.parent
    return SweepResult(root, metric, higher, rows, doc["best"], *_write(root, doc))


def _machine(recipe: Any, workers: int) -> dict[str, Any]:
    """Where the sweep ran: CPU or GPU, library versions, workers and threads per worker."""
    import torch

    from pulse.bench.machine import describe

    device = "cuda" if recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    threads = max(1, cpus() // workers) if workers > 1 else (recipe.train.threads or torch.get_num_threads())
    return {"machine": describe(device), "workers": workers, "threads": threads}


def _write(root: Path, doc: dict[str, Any]) -> tuple[Path, Path]:
    from pulse.paths import atomic_write_text

    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(root / "sweep.md", markdown(doc))
    return root / "sweep.json", root / "sweep.md"
