"""Zoo cards by name: list them, build one, copy one to edit (timm's list_models / create_model, torchtune's cp).

A card is an architecture-only TOML file in zoo/ (pulse/_zoo in a wheel) with a
[card] description and a [model] table; a shipped recipe lives in recipes/
(pulse/_recipes in a wheel). Names resolve in one place, pulse.specs.load.find_recipe.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.errors import PulseError, did_you_mean
from pulse.specs.load import (
    card_names,
    card_path,
    deep_merge,
    find_recipe,
    named_recipe,
    read_table,
    recipe_names,
    resolve,
    validate,
)


@dataclass(frozen=True)
class Card:
    """One zoo card: its name, file, model kind, parameter count (tied weights once) and description."""

    name: str
    path: Path
    kind: str
    params: int
    description: str


def unique_params(model: nn.Module) -> int:
    """Parameters counted once each, however many modules share them (tied embeddings)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def list_models(pattern: str = "*") -> list[str]:
    """Names of the zoo cards matching the glob `pattern`, e.g. list_models("*pulse*")."""
    return [n for n in card_names() if fnmatch.fnmatchcase(n, pattern)]


def list_cards(pattern: str = "*") -> list[Card]:
    """The cards matching `pattern`, each built on the meta device to count its parameters (no memory)."""
    from pulse.assemble import build_model

    out = []
    for name in list_models(pattern):
        path = card_path(name)
        table = read_table(path)
        recipe = validate(resolve(table), source=str(path))
        model = build_model(recipe, device="meta")
        description = str(table.get("card", {}).get("description", ""))
        out.append(Card(name, path, recipe.model.kind, unique_params(model), description))
    return out


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"mixers.pulse.chunk_size": 16, "depth": 2} → nested tables under [model]."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def load_model_recipe(name_or_path: str | Path, **overrides: Any):
    """The recipe of a card name, shipped recipe name or file, with `overrides` applied to its [model] table."""
    path = find_recipe(name_or_path)
    data = read_table(path)
    if overrides:
        if not isinstance(data.get("model"), dict):
            raise PulseError(f"{path}: the recipe has no [model] table to apply {sorted(overrides)} to.")
        data = {**data, "model": deep_merge(data["model"], _nest(overrides))}
    where = f" (with {', '.join(f'{k}={v!r}' for k, v in overrides.items())})" if overrides else ""
    return validate(resolve(data), source=f"{path}{where}")


def create_model(
    name_or_path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model by card name (`create_model("pulse-small", depth=2)`), recipe name or file, or checkpoint.

    Keyword overrides set keys of the [model] table (dotted keys reach nested tables:
    `**{"mixers.pulse.chunk_size": 16}`) and go through the same validation as a recipe.
    A checkpoint directory (or .safetensors file) gives its trained weights; its
    architecture is fixed, so overrides are refused there. device="meta" allocates nothing.
    """
    from pulse.api.checkpoints import load_checkpoint
    from pulse.assemble import build_model
    from pulse.checkpoint import WEIGHTS

    path = Path(name_or_path)
    if (path.is_dir() and (path / WEIGHTS).is_file()) or (path.suffix == ".safetensors" and path.is_file()):
        if overrides:
            raise PulseError(
                f"{path} is a checkpoint, whose weights fix the architecture; drop the overrides "
                f"({', '.join(sorted(overrides))}) or start from the card or recipe it was trained from."
            )
        return load_checkpoint(path, device=device)[0]
    return build_model(load_model_recipe(name_or_path, **overrides), device=device, dtype=dtype)


def copy_recipe(name: str, dest: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Copy a zoo card or shipped recipe, byte for byte (comments kept), to `dest` to edit; returns (source, written).

    `dest` may be a directory (the file keeps its name). An existing file is never
    overwritten unless force=True; the write is atomic.
    """
    from pulse.checkpoint import atomic_write

    source = named_recipe(name)
    if source is None:
        bare = str(name).removesuffix(".toml")
        names = card_names() + recipe_names()
        raise PulseError(
            f"no zoo card or shipped recipe named `{name}`{did_you_mean(bare, names)}; "
            f"cards: {', '.join(card_names()) or 'none'}; recipes: {', '.join(recipe_names()) or 'none'}."
        )
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not force:
        raise PulseError(
            f"{dest} already exists; pass --force (force=True in Python) to overwrite it, or give another destination."
        )
    data = source.read_bytes()
    atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data))
    return source, dest
