"""The [bench] section of a recipe: how to benchmark it by default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pulse.specs.base import Spec


class BenchSpec(Spec):
    """How to benchmark this recipe by default."""

    seq_lens: list[int] = Field(default_factory=lambda: [512, 1024, 2048], description="sequence lengths to measure")
    batch: int = Field(1, ge=1, description="batch size")
    mode: Literal["forward", "train", "generate"] = Field("forward", description="what to time")
    repeats: int = Field(5, ge=1, description="timed repeats after warm-up")
