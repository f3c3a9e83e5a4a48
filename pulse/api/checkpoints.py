"""Models from checkpoints: rebuild from the stored recipe, then load the weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pulse.assemble import build_model
from pulse.checkpoint import load_recipe_from_checkpoint, load_weights
from pulse.specs.recipe import RecipeBase


def load_checkpoint(location: str | Path, *, device: torch.device | str | None = None) -> tuple[nn.Module, RecipeBase]:
    """Rebuild the model from the recipe stored in the checkpoint and load its weights."""
    recipe = load_recipe_from_checkpoint(location)
    model = build_model(recipe, device=device)
    load_weights(model, location)
    return model, recipe
