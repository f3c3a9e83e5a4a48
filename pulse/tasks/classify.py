"""Whole-sequence classification, the shape of every LRA task and of bAbI: one label per sequence.

A subclass says what its examples are — `size(split)`, `encoded(split, index) → (ids, label)`
(a 1-D int64 array of ids below `vocab_size`, and a class below `num_classes`) — and the rest
comes from here: padded batches with lengths, the model check, the head and the loss.

A token model (kind `lm`) reads the ids; its hidden state at each row's last real token goes
through a task head (d → classes). Rows are padded on the right, so a causal model's answer
never sees the padding. A sequence model (kind `sequence_pulse`) reads one-hot ids with a
padding mask and answers itself (output_mode 'last' or 'mean', output_dim = classes).

`fit_model(table)` rewrites a recipe's model table to this task's sizes (vocabulary, input
and output widths): `pulse benchmark` runs one model over a suite of tasks this way.

# b batch · t time · d model · v vocabulary · c classes
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.tasks.base import Batch, IndexedTask, Sums, classification_sums
from pulse.tasks.io import is_token_model, require_sequence_model, require_token_model, sequence_outputs

PAD = 0


class SequenceClassification(IndexedTask, ABC):
    """One label per sequence; accuracy. Subclasses set `kind`, `vocab_size`, `num_classes`, `size`, `encoded`."""

    metric = "accuracy"
    vocab_size: int  # a class attribute, or a property where the data decides (bAbI's words, a folder's labels)
    num_classes: int
    pad_id: int = PAD
    cache_examples = True  # keep encoded examples in memory (generated tasks); False for large file-backed sets

    def __init__(self, spec: Any):
        self.spec = spec
        self._cache: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    @abstractmethod
    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """Example `index` of a split: (ids, label), from its own random stream or file entry."""

    @abstractmethod
    def size(self, split: str) -> int:
        """Examples in a split ("train" or "test")."""

    def _example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        if not self.cache_examples:
            return self.encoded(split, index)
        key = (split, index)
        if key not in self._cache:
            self._cache[key] = self.encoded(split, index)
        return self._cache[key]

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        examples = [self._example(split, int(i)) for i in indices]
        t = max(len(ids) for ids, _ in examples)
        ids = np.full((len(examples), t), self.pad_id, dtype=np.int64)
        for row, (tokens, _) in enumerate(examples):
            ids[row, : len(tokens)] = tokens
        return {
            "ids": torch.from_numpy(ids),
            "lengths": torch.tensor([len(tokens) for tokens, _ in examples]),
            "labels": torch.tensor([label for _, label in examples]),
        }

    def targets(self, batch: Batch) -> int:
        return batch["labels"].numel()

    def tokens(self, batch: Batch) -> int:
        return int(batch["lengths"].sum())

    def check_model(self, model: nn.Module) -> None:
        if is_token_model(model):
            require_token_model(model, self.kind, self.vocab_size)
        else:
            mode = "mean" if getattr(model, "output_mode", None) == "mean" else "last"
            require_sequence_model(model, self.kind, input_dim=self.vocab_size, output_dim=self.num_classes,
                                   output_mode=mode)

    def make_head(self, model: nn.Module, *, device=None, dtype=None) -> nn.Module | None:
        return nn.Linear(model.dim, self.num_classes, device=device, dtype=dtype) if is_token_model(model) else None

    def pooled(self, model: nn.Module, ids: Tensor, lengths: Tensor) -> Tensor:
        """One vector per row: a token model's hidden state at the last real token (b, d), or a sequence
        model's own output (b, o)."""
        if is_token_model(model):
            h, _ = model.features(ids)  # (b, t, d)
            return h[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)  # (b, t)
        x = F.one_hot(ids, self.vocab_size).to(next(model.parameters()).dtype)  # (b, t, v)
        return sequence_outputs(model, x, mask)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        pooled = self.pooled(model, batch["ids"], batch["lengths"])
        logits = head(pooled) if head is not None else pooled  # (b, c)
        return classification_sums(logits, batch["labels"])

    def fit_model(self, model: dict[str, Any]) -> dict[str, Any]:
        """A copy of a recipe's model table sized for this task."""
        model = dict(model)
        if "vocab_size" in model or model.get("kind") == "lm":
            model["vocab_size"] = self.vocab_size
        if "input_dim" in model:
            model["input_dim"] = self.vocab_size
            model["output_dim"] = self.num_classes
            if model.get("output_mode") not in ("last", "mean"):
                model["output_mode"] = "last"
        return model
