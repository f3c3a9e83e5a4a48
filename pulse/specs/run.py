"""The [train] section of a recipe: how to train."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pulse.specs.base import Spec


class TrainSpec(Spec):
    """How to train: optimiser, schedule, budget, precision, logging and checkpoints."""

    steps: int = Field(1000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="sequences per optimiser step (global, across processes)")
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per step; batch_size must divide by grad_accum × processes"
    )
    lr: float = Field(1e-3, gt=0, le=10, description="peak learning rate (at most 10: AdamW moves each weight by "
                                                      "about lr per step, and more cannot be meant)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction of lr (cosine, linear)")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate decay after warm-up"
    )
    warmup_steps: int = Field(
        0, ge=0, description="steps of linear warm-up to lr (a run shorter than this never reaches the peak)"
    )
    weight_decay: float = Field(0.1, ge=0, le=10, description="decoupled (AdamW) weight decay on matrices (each step "
                                                               "shrinks them by lr × weight_decay; at most 10)")
    no_decay: list[Literal["norms", "biases", "embeddings"]] = Field(
        default_factory=lambda: ["norms", "biases", "embeddings"],
        description="parameters exempt from weight decay: norm weights, biases (and every other vector or "
        "scalar parameter), embedding tables",
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.95), description="AdamW β₁, β₂, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, le=1, description="AdamW ε (at most 1)")
    grad_clip: float = Field(1.0, ge=0, le=1e6, description="clip the global gradient norm to this (0 = no clipping)")
    precision: Literal["float32", "bf16"] = Field(
        "float32", description="bf16 runs the forward pass under bfloat16 autocast; weights stay float32"
    )
    seed: int = Field(0, ge=0, description="seed for weights, data order and sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = as many as CPUs are free, re-checked "
                         "during the run; set it for bit-identical reruns on a shared machine)")
    max_time: float | None = Field(
        None, gt=0, description="stop after this many seconds of training, then evaluate and save as at the end"
    )
    eval_every: int = Field(200, ge=0, description="evaluate on the held-out set every N steps (0 = only at the end)")
    eval_batch_size: int | None = Field(None, ge=1, description="batch size for evaluation (default batch_size)")
    log_every: int = Field(10, ge=1, description="write a metrics.jsonl line every N steps")
    checkpoint_every: int = Field(
        500, ge=0, description="save a resumable checkpoint every N steps (0 = only at the end)"
    )
    keep_last: int = Field(2, ge=1, description="how many step checkpoints to keep")
    init_from: str | None = Field(
        None,
        description="fine-tune: start from the weights of this run directory or checkpoint (its final weights, "
        "else its newest step checkpoint); the [model] must have the same architecture, the task head is loaded "
        "when it fits; a resumed run continues from its own checkpoint instead",
    )

    @model_validator(mode="after")
    def _check(self) -> "TrainSpec":
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must divide by grad_accum ({self.grad_accum}); "
                f"use a batch_size that is a multiple of {self.grad_accum}"
            )
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self
