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

from pulse.specs.tasks import SelectiveCopySpec
from pulse.tasks.base import IGNORE
from pulse.tasks.io import GeneratedTokenTask


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


class SelectiveCopy(GeneratedTokenTask):
    """Selective copying over fixed generated sets; accuracy over the copied tokens."""

    kind = "selective_copy"
    metric = "accuracy"
    make = staticmethod(generate)
