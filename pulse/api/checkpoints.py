"""Models from checkpoints: rebuild from the stored recipe, then load the weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pulse.assemble import build_model
from pulse.checkpoint import load_recipe_from_checkpoint, load_weights
from pulse.specs.recipe import RecipeBase


def load_checkpoint(location: str | Path, *, device: torch.device | str | None = None,
                    allow_unverified: bool = False) -> tuple[nn.Module, RecipeBase]:
    """Rebuild the model from the recipe stored in the checkpoint and load its weights.

    A file without its checksum or recipe hash is refused unless allow_unverified=True.
    """
    recipe = load_recipe_from_checkpoint(location, allow_unverified=allow_unverified)
    model = build_model(recipe, device=device)
    load_weights(model, location, allow_unverified=allow_unverified)
    return model, recipe
