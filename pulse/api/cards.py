"""Zoo cards by name: list them, build one, copy one to edit (timm's list_models / create_model, torchtune's cp).

A card is an architecture-only TOML file in zoo/ (pulse/_zoo in a wheel) with a
[card] description and a [model] table; a shipped recipe lives in recipes/
(pulse/_recipes in a wheel). Names resolve in one place, pulse.specs.load.find_recipe.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.api.source import open_source
from pulse.contract import count_params
from pulse.errors import PulseError, did_you_mean
from pulse.specs.load import card_names, card_path, named_recipe, read_table, recipe_names, resolve, validate


@dataclass(frozen=True)
class Card:
    """One zoo card: its name, file, model kind, parameter count (tied weights once) and description."""

    name: str
    path: Path
    kind: str
    params: int
    description: str


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
        out.append(Card(name, path, recipe.model.kind, count_params(model), description))
    return out


def _toml(value: Any) -> str:
    """A Python value as the TOML literal `--set` reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def model_overrides(overrides: dict[str, Any]) -> list[str]:
    """Keyword overrides of the [model] table ({"mixers.pulse.chunk_size": 16}) as --set strings."""
    return [f"model.{key}={_toml(value)}" for key, value in overrides.items()]


def create_model(
    name_or_path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model by card name (`create_model("pulse-small", depth=2)`), recipe name or file, or checkpoint.

    Keyword overrides set keys of the [model] table (dotted keys reach nested tables:
    `**{"mixers.pulse.chunk_size": 16}`) and go through the same validation as a recipe.
    A checkpoint or run directory (or .safetensors file) gives its trained weights; its
    architecture is fixed, so overrides are refused there. device="meta" allocates nothing.
    """
    return open_source(name_or_path, model_overrides(overrides)).build(device=device, dtype=dtype)


def copy_recipe(name: str, dest: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Copy a zoo card or shipped recipe, byte for byte (comments kept), to `dest` to edit; returns (source, written).

    `dest` may be a directory (the file keeps its name). An existing file is never
    overwritten unless force=True; the write is atomic.
    """
    from pulse.paths import atomic_write

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
