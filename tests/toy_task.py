"""The smallest new task, as a user would add one: one task class, one spec, one registration line.

`PULSE_TEST_REGISTER=toy_task pytest …` registers it before the registry-wide tests are collected,
which is how tests/test_task_contract.py shows those tests cover a new task kind with no edit to them
(docs/tasks.md walks through it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pulse import registry
from pulse.specs.task_base import GeneratedSpec
from pulse.tasks.base import IGNORE, Batch, IndexedTask, Sums, classification_sums, rng_for
from pulse.tasks.io import labelled_logits, require_token_model


class Parity(IndexedTask):
    """Read a row of bits (token ids 0 and 1), then say their parity at the last one: accuracy.

        1 0 1 1 0 1        labels: −100 … −100 0   (four ones: even)
    """

    kind = "toy_parity"
    metric = "accuracy"

    def __init__(self, spec: ParitySpec):
        self.spec = spec

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        bits = np.stack([rng_for(self.spec.seed, split, int(i)).integers(0, 2, self.spec.bits) for i in indices])
        labels = np.full_like(bits, IGNORE)
        labels[:, -1] = bits.sum(1) % 2
        return {"ids": torch.from_numpy(bits), "labels": torch.from_numpy(labels)}

    def check_model(self, model: nn.Module) -> None:
        require_token_model(model, self.kind, 2)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        return classification_sums(*labelled_logits(model, batch["ids"], batch["labels"]))


class ParitySpec(GeneratedSpec):
    """The parity of a row of random bits, said at its last bit."""

    kind: Literal["toy_parity"] = "toy_parity"
    bits: int = Field(12, ge=1, description="bits per example")
    example_settings = {"bits": 5, "num_train": 8, "num_test": 6}


def register() -> None:
    registry.register("toy_parity", role="task", spec=ParitySpec, module=Parity)
