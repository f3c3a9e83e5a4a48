"""The NTM copy task (Graves et al., 2014): read L random bit vectors, then write them back.

    x₁ x₂ … x_L  DELIM  _  _ … _          (2L + 1 steps; L drawn from min_len … max_len)
    labels:  −100 …    −100   x₁ x₂ … x_L

A language model reads each vector as one token (its bits as a binary number; the
delimiter is 2^bits, the blank 2^bits + 1) and answers through its own head,
restricted to the 2^bits vector tokens. A sequence model over continuous inputs reads
bits + 1 channels (the last one flags the delimiter) and answers with one logit per
bit. Shorter examples in a batch are padded with blanks and no labels. Test lengths
may differ from training lengths (eval_min_len, eval_max_len) to measure generalisation.

# b batch · t time · n recall positions · c bits
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.specs.tasks import CopySpec
from pulse.tasks.base import IGNORE, Batch, IndexedTask, Sums, rng_for
from pulse.tasks.io import is_token_model, require_sequence_model, require_token_model, sequence_outputs


class Copy(IndexedTask):
    """NTM copy; bit accuracy over the recalled vectors (plus whole-vector and whole-sequence accuracy)."""

    kind = "copy"
    metric = "bit_accuracy"

    def __init__(self, spec: CopySpec):
        self.spec = spec
        self.delimiter = 2**spec.bits
        self.blank = 2**spec.bits + 1
        self.vocab_size = 2**spec.bits + 2

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def _example(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (self.spec.min_len, self.spec.max_len) if split == "train" else self.spec.test_lengths()
        rng = rng_for(self.spec.seed, split, index)
        length = int(rng.integers(lo, hi + 1))
        vectors = rng.integers(0, 2, size=(length, self.spec.bits))
        tokens = vectors @ (1 << np.arange(self.spec.bits))  # (L,)
        ids = np.concatenate([tokens, [self.delimiter], np.full(length, self.blank)])
        labels = np.concatenate([np.full(length + 1, IGNORE), tokens])
        return ids, labels

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        examples = [self._example(split, int(i)) for i in indices]
        t = max(len(ids) for ids, _ in examples)
        ids = np.full((len(examples), t), self.blank, dtype=np.int64)
        labels = np.full((len(examples), t), IGNORE, dtype=np.int64)
        for row, (x, y) in enumerate(examples):
            ids[row, : len(x)] = x
            labels[row, : len(y)] = y
        return {"ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def tokens(self, batch: Batch) -> int:
        return int((batch["ids"] != self.blank).sum() + (batch["labels"] != IGNORE).sum())

    def check_model(self, model: nn.Module) -> None:
        if is_token_model(model):
            require_token_model(model, self.kind, self.vocab_size)
        else:
            require_sequence_model(model, self.kind, input_dim=self.spec.bits + 1, output_dim=self.spec.bits,
                                   output_mode="all")

    def _bits(self, tokens: Tensor) -> Tensor:
        """(…) integer vector tokens → (…, c) bits as float."""
        return ((tokens.unsqueeze(-1) >> torch.arange(self.spec.bits, device=tokens.device)) & 1).float()

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        ids, labels = batch["ids"], batch["labels"]
        mask = labels != IGNORE  # (b, t)
        target = labels[mask]  # (n,)
        if is_token_model(model):
            h, _ = model.features(ids)
            logits = model.head(h[mask])[:, : self.delimiter].float()  # (n, 2^c)
            loss_sum = F.cross_entropy(logits, target, reduction="sum")
            predicted_bits = self._bits(logits.argmax(-1))
        else:
            delimiter = (ids == self.delimiter).float().unsqueeze(-1)
            vectors = torch.where((ids < self.delimiter).unsqueeze(-1), self._bits(ids.clamp(max=self.delimiter - 1)),
                                  torch.zeros((), device=ids.device))
            x = torch.cat([vectors, delimiter], dim=-1)  # (b, t, c+1)
            lengths = 2 * mask.sum(dim=1, keepdim=True) + 1  # (b, 1): 2L + 1 real steps per row
            real = torch.arange(ids.shape[1], device=ids.device) < lengths  # (b, t)
            logits = sequence_outputs(model, x, real)[mask].float()  # (n, c)
            loss_sum = F.binary_cross_entropy_with_logits(logits, self._bits(target), reduction="sum")
            predicted_bits = (logits > 0).float()
        right = predicted_bits == self._bits(target)  # (n, c)
        vector_ok = right.all(-1)
        per_row = torch.ones_like(mask)
        per_row[mask] = vector_ok
        count = torch.tensor(float(target.numel()), device=ids.device)
        return {
            "loss_sum": loss_sum,
            "count": count,
            "bits_right": right.sum().float(),
            "bits": torch.tensor(float(right.numel()), device=ids.device),
            "vectors_right": vector_ok.sum().float(),
            "sequences_right": per_row.all(-1).sum().float(),
            "sequences": torch.tensor(float(ids.shape[0]), device=ids.device),
        }

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        count = max(sums["count"], 1.0)
        return {
            "loss": sums["loss_sum"] / count,
            "bit_accuracy": sums["bits_right"] / max(sums["bits"], 1.0),
            "vector_accuracy": sums["vectors_right"] / count,
            "seq_accuracy": sums["sequences_right"] / max(sums["sequences"], 1.0),
        }
