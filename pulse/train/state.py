"""A run directory: resumable checkpoints, the metrics log, and exact resume.

    RUN/
      metrics.jsonl                one JSON record per log or eval line
      checkpoints/step-00000200/   model.safetensors, head.safetensors, recipe.json, train_state.pt
      model.safetensors …          the final weights (a checkpoint directory itself)
      loss.png, <metric>.png, summary.json

A step checkpoint is written into a hidden temporary directory and renamed into place
when complete, so a run killed at any moment leaves only whole checkpoints behind;
the newest whole one is where a rerun continues. train_state.pt (torch.save; loaded
with weights_only=True) holds the optimiser, the scheduler, the RNG states of torch,
Python and NumPy, the step (which is the data position: batches are a function of it),
the tokens seen and the elapsed wall time.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse.checkpoint import RECIPE, WEIGHTS, atomic_write, atomic_write_text, load_weights, save_checkpoint
from pulse.errors import PulseError

STATE = "train_state.pt"
HEAD = "head.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """Every global random stream, in a form torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Resumed:
    step: int
    tokens: int
    elapsed: float
    path: Path


class RunDir:
    """The files of one training run. Only rank 0 writes; every rank may read."""

    def __init__(self, root: str | Path, *, writer: bool = True):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.writer = writer

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """Whole step checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            if p.name.startswith("step-") and p.name[5:].isdigit() and (p / STATE).is_file() and (p / WEIGHTS).is_file():
                found.append((int(p.name[5:]), p))
        return sorted(found)

    def stored_recipe(self) -> dict[str, Any] | None:
        """The recipe of the run already in this directory, if any."""
        for path in [*(p / RECIPE for _, p in reversed(self.complete())), self.root / RECIPE]:
            if path.is_file():
                try:
                    return json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue
        return None

    def check_recipe(self, recipe: Any) -> None:
        """Refuse to continue a run of a different recipe in the same directory."""
        stored = self.stored_recipe()
        if stored is None or not self.complete():
            return
        current = recipe.to_dict()
        if stored != current:
            diffs = _differences(stored, current)
            raise PulseError(
                f"{self.root} holds a run of a different recipe (differs at {', '.join(diffs[:6]) or 'the top level'}); "
                "an exact resume needs the same recipe. Train into another --out directory, or delete this one."
            )

    def clean_partial(self) -> None:
        """Remove temporary directories left by a run killed while checkpointing."""
        if self.writer and self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.name.startswith(".step-"):
                    shutil.rmtree(p, ignore_errors=True)

    def save(self, step: int, *, model: nn.Module, head: nn.Module | None, recipe: Any, state: dict[str, Any],
             keep_last: int) -> Path:
        """Write a whole step checkpoint atomically, then drop all but the newest `keep_last`."""
        final = self.step_dir(step)
        if not self.writer:
            return final
        tmp = self.checkpoints / f".step-{step:08d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_checkpoint(model, recipe, tmp)
        if head is not None:
            save_checkpoint(head, recipe, tmp, name=HEAD)
        atomic_write(tmp / STATE, lambda path: torch.save({"format": FORMAT, **state}, path))
        if final.exists():
            stale = final.with_name(f".{final.name}.{os.getpid()}.old")
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(self.checkpoints)
        for _, old in self.complete()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest(self, *, model: nn.Module, head: nn.Module | None, optimizer: torch.optim.Optimizer,
                    scheduler: Any, warn=None) -> Resumed | None:
        """Restore the newest readable checkpoint into the given objects; None when there is none."""
        for step, path in reversed(self.complete()):
            try:
                state = torch.load(path / STATE, map_location="cpu", weights_only=True)
                load_weights(model, path)
                if head is not None:
                    load_weights(head, path / HEAD)
            except (PulseError, RuntimeError, OSError, EOFError) as err:
                if warn is not None:
                    warn(f"skipping unreadable checkpoint {path}: {err}")
                continue
            if state.get("format") != FORMAT or state.get("step") != step:
                if warn is not None:
                    warn(f"skipping checkpoint {path}: its training state is from another format or step")
                continue
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            return Resumed(step=step, tokens=int(state["tokens"]), elapsed=float(state["elapsed"]), path=path)
        return None

    def save_final(self, *, model: nn.Module, head: nn.Module | None, recipe: Any) -> Path:
        if self.writer:
            save_checkpoint(model, recipe, self.root)
            if head is not None:
                save_checkpoint(head, recipe, self.root, name=HEAD)
        return self.root / WEIGHTS

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writer:
            atomic_write_text(self.root / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


class MetricsLog:
    """metrics.jsonl: appended and flushed line by line, cut back to the resumed step on resume."""

    def __init__(self, path: Path, *, writer: bool = True):
        self.path = path
        self.writer = writer

    def restart(self, step: int) -> None:
        """Keep the whole records up to `step` (all of them are redone after it)."""
        if not self.writer:
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step] if step > 0 else []
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_text(self.path, text)

    def write(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The whole JSON records of a metrics file (a line cut short by a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix or "(top level)"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
