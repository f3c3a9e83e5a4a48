"""Checkpoints: safetensors weights with the resolved recipe in the metadata.

A checkpoint directory holds `model.safetensors` (weights; metadata: recipe JSON,
recipe hash, library version) and `recipe.json` (the same recipe, for people).
Every write goes to a temporary file first and is renamed into place, so a run
killed at any moment leaves the previous good file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from pulse.errors import PulseError

WEIGHTS = "model.safetensors"
RECIPE = "recipe.json"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) then rename tmp_path over `path` (same directory, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_checkpoint(model: nn.Module, recipe: Any, directory: str | Path, *, name: str = WEIGHTS) -> Path:
    """Save weights (+ recipe metadata) into `directory` atomically; returns the weights path."""
    from pulse import __version__

    directory = Path(directory)
    recipe_json = json.dumps(recipe.to_dict(), sort_keys=True)
    metadata = {"pulse_recipe": recipe_json, "pulse_recipe_hash": recipe.hash(), "pulse_version": __version__,
                "format": "pt"}
    path = directory / name
    atomic_write(path, lambda tmp: save_model(model, tmp, metadata=metadata))
    atomic_write_text(directory / RECIPE, json.dumps(recipe.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def weights_path(location: str | Path) -> Path:
    location = Path(location)
    path = location / WEIGHTS if location.is_dir() else location
    if not path.exists():
        where = f"{location} has no {WEIGHTS}" if location.is_dir() else f"{location}: no such file"
        raise PulseError(f"{where}; give a checkpoint directory written by `pulse build --out` or `pulse train`.")
    return path


def read_metadata(location: str | Path) -> dict[str, str]:
    path = weights_path(location)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise PulseError(f"{path}: not a readable safetensors checkpoint (truncated or corrupt?): {err}.") from None
    if "pulse_recipe" not in meta:
        raise PulseError(f"{path}: a safetensors file without PULSE recipe metadata; it was not written by pulse.")
    return meta


def load_recipe_from_checkpoint(location: str | Path):
    from pulse.specs.load import validate

    path = weights_path(location)
    meta = read_metadata(path)
    try:
        data = json.loads(meta["pulse_recipe"])
    except json.JSONDecodeError as err:
        raise PulseError(f"{path}: the recipe stored in the metadata is not valid JSON ({err}).") from None
    return validate(data, source=f"{path} (stored recipe)")


def load_weights(model: nn.Module, location: str | Path) -> None:
    """Load weights into `model`, strictly: a missing, extra or misshapen tensor is a PulseError."""
    path = weights_path(location)
    read_metadata(path)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as err:
        raise PulseError(f"{path}: cannot read the weights (truncated or corrupt?): {err}.") from None
    except RuntimeError as err:
        raise PulseError(f"{path}: weights do not fit this model (built from a different recipe?): {err}.") from None
    if missing or unexpected:
        raise PulseError(
            f"{path}: weights do not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            "the checkpoint comes from a different recipe."
        )


def load_checkpoint(location: str | Path, *, device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """Rebuild the model from the recipe stored in the checkpoint and load its weights."""
    from pulse.build import build_model

    recipe = load_recipe_from_checkpoint(location)
    model = build_model(recipe, device=device)
    load_weights(model, location)
    return model, recipe
