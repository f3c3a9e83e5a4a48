"""The run sections of a recipe: how to train and how to benchmark."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pulse.specs.base import Spec


class TrainSpec(Spec):
    """How to train: optimiser, schedule, budget."""

    steps: int = Field(1000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="sequences per optimiser step (global, across processes)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="decoupled (AdamW) weight decay on matrices")
    seed: int = Field(0, description="seed for weights, data order and sampling")


class BenchSpec(Spec):
    """How to benchmark this recipe by default."""

    seq_lens: list[int] = Field(default_factory=lambda: [512, 1024, 2048], description="sequence lengths to measure")
    batch: int = Field(1, ge=1, description="batch size")
    mode: Literal["forward", "train", "generate"] = Field("forward", description="what to time")
    repeats: int = Field(5, ge=1, description="timed repeats after warm-up")
