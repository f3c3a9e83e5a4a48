"""The only place that turns specs into modules."""

from __future__ import annotations

import os
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from pulse import registry
from pulse.assemble import (
    layers,  # noqa: F401  (registers attention, the MLPs, norms and positions)
    mixers,  # noqa: F401  (registers the other mixers: the delta-rule family, SSMs, linear attention, …)
    models,  # noqa: F401  (registers the models)
    pulse,  # noqa: F401  (registers the PULSE slot family)
)
from pulse.assemble.component import build_component, spec_arguments
from pulse.assemble.context import BuildContext
from pulse.errors import PulseError
from pulse.specs.base import Spec
from pulse.specs.load import migrate_mixer
from pulse.specs.messages import format_errors
from pulse.specs.recipe import RecipeBase, spec_class

__all__ = ["BuildContext", "build_component", "build_mixer", "build_model", "make_spec", "spec_arguments"]


def make_spec(kind: str, role: str | None = None, **params: Any) -> Spec:
    """Validate `params` through the spec of `kind`; a PulseError says what is wrong. An old spelling (kind
    "pulse" with gate "delta") becomes the kind it was renamed (pulse_delta), with a note."""
    table = migrate_mixer({"kind": kind, **params}, f"{kind} spec")
    kind, params = table["kind"], {k: v for k, v in table.items() if k != "kind"}
    entry = registry.get(kind, role)
    cls = spec_class(entry.kind)
    try:
        return cls.model_validate({"kind": kind, **params})
    except ValidationError as err:
        raise PulseError(format_errors(err, cls, f"{kind} spec")) from None


def build_mixer(
    kind: str, dim: int, *, device=None, dtype=None, rotary_base: float | None = None, **params: Any
) -> nn.Module:
    """Build one registered mixer at width `dim`, validating `params` like a recipe would."""
    spec = make_spec(kind, "mixer", **params)
    try:
        spec.check_dim(dim)
    except ValueError as err:
        raise PulseError(f"{kind} at dim={dim}: {err}.") from None
    return build_component(spec, BuildContext(dim, device, dtype, rotary_base))


def build_model(recipe: RecipeBase | Spec, *, device: torch.device | str | None = None, dtype=None) -> nn.Module:
    """Assemble the model of a recipe (or a model spec, or a card/recipe name or path).

    device="meta" allocates nothing."""
    if isinstance(recipe, (str, os.PathLike)):
        from pulse.specs.load import load_recipe

        recipe = load_recipe(recipe)
    spec = recipe.model if isinstance(recipe, RecipeBase) else recipe
    model = build_component(spec, BuildContext(getattr(spec, "dim", 0), device, dtype))
    model.spec = spec
    return model
