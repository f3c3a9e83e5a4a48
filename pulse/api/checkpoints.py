"""Models from checkpoints: rebuild from the stored recipe, then load the weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pulse.api.source import open_source
from pulse.specs.recipe import RecipeBase


def load_checkpoint(location: str | Path, *, device: torch.device | str | None = None,
                    allow_unverified: bool = False) -> tuple[nn.Module, RecipeBase]:
    """Rebuild the model from the recipe stored in a checkpoint (or a run's newest) and load its weights.

    A file without its checksum or recipe hash is refused unless allow_unverified=True.
    """
    source = open_source(location, allow_unverified=allow_unverified)
    source.require_weights("load_checkpoint")
    return source.build(device=device), source.recipe
