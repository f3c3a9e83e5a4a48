"""The [bench] section of a recipe: how `pulse bench` measures it by default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pulse.specs.base import Spec


class BenchSpec(Spec):
    """How to benchmark this recipe by default; every field can be overridden on the command line."""

    seq_lens: list[int] = Field(default_factory=lambda: [512, 1024, 2048], description="sequence lengths to measure")
    batch: int = Field(1, ge=1, description="batch size")
    mode: Literal["forward", "train", "generate"] = Field(
        "forward",
        description="what to time: forward (no grad), train (forward + backward + AdamW step), "
        "generate (time per new token after prefilling seq_len tokens)",
    )
    repeats: int = Field(5, ge=1, description="timed repeats after warm-up, in each measuring process")
    warmup: int = Field(
        1, ge=0, description="untimed runs before the timed repeats (generate: untimed rounds of generate_tokens steps)"
    )
    rounds: int = Field(
        1, ge=1, description="fresh processes per (system, length); systems are interleaved round by round"
    )
    generate_tokens: int = Field(8, ge=1, description="new tokens timed per repeat in generate mode")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = Field(
        "float32", description="parameter and activation dtype"
    )
    max_seconds: float | None = Field(
        None, gt=0, description="wall-clock budget of the whole run; measurements past it are skipped"
    )
    timeout: float = Field(
        600.0, gt=0, description="seconds one measuring process may take (start-up included) before it is skipped"
    )
    vs: list[str] = Field(
        default_factory=list,
        description="recipes to compare against, as paths relative to this recipe's file; this recipe is the baseline",
    )

    @field_validator("seq_lens")
    @classmethod
    def _lengths(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("seq_lens is empty; give at least one length, e.g. [512, 1024]")
        bad = [n for n in value if n < 1]
        if bad:
            raise ValueError(f"seq_lens must be ≥ 1, got {bad}")
        return sorted(set(value))
