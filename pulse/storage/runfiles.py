"""The files of a run directory, read-only: their names, and which weights in it are the newest.

`pulse.storage.rundir` writes run directories and holds the resume policy; code that only
reads one (`pulse.api.source` above all) asks here, so the layout is written down once:

    RUN/
      run.json                     the recipe the run continues with, and its hash
      metrics.jsonl · summary.json · init_from.json
      checkpoints/step-00000200/   model.safetensors, head.safetensors, recipe.json, train_state.safetensors
      model.safetensors            the final weights (with head.safetensors and recipe.json beside them),
                                   so the run directory is a checkpoint directory itself
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulse.storage.checkpoint import WEIGHTS, recipe_hash

STATE = "train_state.safetensors"
LEGACY_STATE = "train_state.pt"
HEAD = "head.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN = "run.json"
CHECKPOINTS = "checkpoints"
INIT_RECORD = "init_from.json"


def step_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Whole step checkpoints (renamed into place: weights and training state both there), oldest first."""
    folder = Path(root) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        state = (p / STATE).is_file() or (p / LEGACY_STATE).is_file()
        if p.name.startswith("step-") and p.name[5:].isdigit() and state and (p / WEIGHTS).is_file():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def is_run(root: str | Path) -> bool:
    """Whether `root` is a directory `pulse train` wrote (its run.json, or its checkpoints folder)."""
    root = Path(root)
    return root.is_dir() and ((root / RUN).is_file() or (root / CHECKPOINTS).is_dir())


def final_step(root: str | Path) -> int | None:
    """The step of the final weights in a run directory, from its summary.json (None if unknown)."""
    try:
        step = json.loads((Path(root) / SUMMARY).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def newest_weights(root: str | Path) -> list[tuple[int | None, Path]]:
    """Every directory of a run holding weights, newest first, as (step, directory).

    The final weights rank above a step checkpoint of the same step (they are the same
    weights, and beside them are the run's readable recipe.json and summary); a run
    resumed after it finished and stopped again has newer step checkpoints, which come first.
    """
    root = Path(root)
    steps = [(s, p) for s, p in reversed(step_checkpoints(root))]
    if not (root / WEIGHTS).is_file():
        return steps
    final = final_step(root)
    newer = [(s, p) for s, p in steps if final is None or s > final]
    return [*newer, (final, root), *steps[len(newer):]]


def marked_recipe(root: str | Path) -> dict[str, Any] | None:
    """The recipe in run.json when its hash matches; None when it is missing or altered."""
    try:
        mark = json.loads((Path(root) / RUN).read_text(encoding="utf-8"))
        data = mark["recipe"]
        if recipe_hash(data) == mark["recipe_hash"]:
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
