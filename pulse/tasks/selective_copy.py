"""Selective copying (H3, Mamba): copy the content tokens scattered among blanks, in order.

    c₁ _ _ c₂ _ c₃ _ _ … _ | COPY | _ _ _        (t tokens in all)
    labels: −100 … −100    | −100 | c₁ c₂ c₃

Content tokens are 0 … v−3, the blank is v−2 and the copy marker v−1. The content
region holds t − k − 1 positions, k of them (uniformly chosen) carry the content;
after the marker come k blanks whose outputs must be the content in order.

# b batch · t time · k tokens to copy · v vocab
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pulse.specs.tasks import SelectiveCopySpec
from pulse.tasks.base import (
    IGNORE,
    Batch,
    IndexedTask,
    Sums,
    classification_sums,
    rng_for,
)
from pulse.tasks.io import labelled_logits, require_token_model


def generate(spec: SelectiveCopySpec, num_examples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels), each (num_examples, seq_len) int64."""
    k, t, v = spec.num_tokens, spec.seq_len, spec.vocab_size
    blank, marker = v - 2, v - 1
    region = t - k - 1
    content = rng.integers(0, v - 2, size=(num_examples, k))  # (b, k)
    where = np.sort(np.argsort(rng.random((num_examples, region)), axis=1)[:, :k], axis=1)  # (b, k) ascending
    inputs = np.full((num_examples, t), blank, dtype=np.int64)
    np.put_along_axis(inputs, where, content, axis=1)
    inputs[:, region] = marker
    labels = np.full((num_examples, t), IGNORE, dtype=np.int64)
    labels[:, region + 1 :] = content
    return torch.from_numpy(inputs), torch.from_numpy(labels)


class SelectiveCopy(IndexedTask):
    """Selective copying over fixed generated sets; accuracy over the copied tokens."""

    kind = "selective_copy"
    metric = "accuracy"

    def __init__(self, spec: SelectiveCopySpec):
        self.spec = spec
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        if split not in self._data:
            self._data[split] = generate(self.spec, self.size(split), rng_for(self.spec.seed, split))
        inputs, labels = self._data[split]
        idx = torch.from_numpy(indices)
        return {"ids": inputs[idx], "labels": labels[idx]}

    def check_model(self, model: nn.Module) -> None:
        require_token_model(model, self.kind, self.spec.vocab_size)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        return classification_sums(*labelled_logits(model, batch["ids"], batch["labels"]))
