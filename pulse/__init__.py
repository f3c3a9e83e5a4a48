"""PULSE: a declarative, config-driven zoo of state-based sequence models."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pulse")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

from pulse import registry
from pulse.build import build_mixer, build_model, make_spec
from pulse.blocks.attention import CausalSelfAttention
from pulse.contract import Mixer
from pulse.errors import PulseError
from pulse.specs import RecipeBase as Recipe
from pulse.specs import json_schema, load_recipe, recipe_from_dict


def list_blocks(pattern: str = "*", role: str | None = None) -> list[registry.Entry]:
    """Registered kinds whose name matches the glob `pattern`, optionally of one role."""
    return registry.entries(pattern, role)


__all__ = [
    "CausalSelfAttention",
    "Mixer",
    "PulseError",
    "Recipe",
    "__version__",
    "build_mixer",
    "build_model",
    "json_schema",
    "list_blocks",
    "load_recipe",
    "make_spec",
    "recipe_from_dict",
    "registry",
]
