"""The [train] section of a recipe: how to train."""

from __future__ import annotations

from pydantic import Field

from pulse.specs.base import Spec


class TrainSpec(Spec):
    """How to train: optimiser, schedule, budget."""

    steps: int = Field(1000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="sequences per optimiser step (global, across processes)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="decoupled (AdamW) weight decay on matrices")
    seed: int = Field(0, description="seed for weights, data order and sampling")
