"""Multi-query associative recall, generated as in Zoology (Arora et al., 2023).

    Key Val Key Val | filler … Query … Query …
     2   8   4   7  |  0  0    4   0 0  2   0        (vocab 12, 2 pairs, random_non_queries off)
    labels: −100 everywhere except at each query, where it is that key's value.

Keys come from the lower half of the vocabulary (1 … v/2−1), values from the upper
half; each example holds `num_kv_pairs` distinct keys and distinct values. Key i is
queried at position 2·(pairs + g_i), where the gaps g are drawn without replacement
from 0 … (t − 2·pairs)/2 − 1 with probability ∝ g^(α−1) (α = power_a = 0.01: short
distances are most likely). Loss and accuracy count the query positions only.

# b batch · t time · k key-value pairs · g candidate gaps · v vocab
"""

from __future__ import annotations

import numpy as np
import torch

from pulse.specs.tasks import MqarSpec
from pulse.tasks.base import IGNORE, Batch, rng_for
from pulse.tasks.io import GeneratedTokenTask


def _distinct(rng: np.random.Generator, rows: int, k: int, low: int, high: int) -> np.ndarray:
    """`rows` independent ordered samples of k distinct integers from low … high−1."""
    span = high - low
    if 4 * k <= span:
        out = rng.integers(low, high, size=(rows, k))
        while True:
            s = np.sort(out, axis=1)
            dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
            if not dup.any():
                return out
            out[dup] = rng.integers(low, high, size=(int(dup.sum()), k))
    keys = rng.random((rows, span))
    return np.argsort(keys, axis=1)[:, :k] + low


def _power_law_gaps(rng: np.random.Generator, rows: int, k: int, space: int, power_a: float) -> np.ndarray:
    """k distinct gaps per row, drawn one after another without replacement with p(g) ∝ (g+1)^(α−1).

    Exponential races (Efraimidis–Spirakis): the order in which Exp(1)/p_g arrive is the
    order of sequential weighted sampling without replacement.
    """
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    p = p / p.sum()
    race = rng.exponential(size=(rows, space)) / p  # (b, g)
    return np.argsort(race, axis=1, kind="stable")[:, :k]


def generate(spec: MqarSpec, num_examples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels), each (num_examples, seq_len) int64."""
    k, t, v = spec.num_kv_pairs, spec.seq_len, spec.vocab_size
    context = 2 * k
    half = v // 2
    keys = _distinct(rng, num_examples, k, 1, half)  # (b, k)
    values = _distinct(rng, num_examples, k, half, v)  # (b, k)
    kvs = np.zeros((num_examples, context), dtype=np.int64)
    kvs[:, 0::2] = keys
    kvs[:, 1::2] = values

    space = (t - context) // 2
    gaps = _power_law_gaps(rng, num_examples, k, space, spec.power_a)  # (b, k)
    queries = np.zeros((num_examples, t - context + 1), dtype=np.int64)
    np.put_along_axis(queries, gaps * 2, keys, axis=1)
    examples = np.concatenate([kvs, queries], axis=1)  # (b, t+1)

    # the label sits where the key is queried: the value is the next token to predict
    labels = np.full((num_examples, t + 1), IGNORE, dtype=np.int64)
    np.put_along_axis(labels, gaps * 2 + context + 1, values, axis=1)
    inputs, labels = examples[:, :-1], labels[:, 1:]
    if spec.random_non_queries:
        filler = inputs == 0
        inputs = inputs.copy()
        inputs[filler] = rng.integers(0, v, size=int(filler.sum()))
    return torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(labels))


def generate_mixture(spec: MqarSpec, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set of `spec.mixture`: each setting's examples, padded at the end to spec.seq_len (token 0,
    no label: a causal model reads the padding only after every query), one setting after another."""
    inputs, labels = [], []
    for seq, pairs, count in spec.mixture or ():
        x, y = generate(spec.model_copy(update={"seq_len": seq, "num_kv_pairs": pairs}), count, rng)
        inputs.append(torch.nn.functional.pad(x, (0, spec.seq_len - seq)))
        labels.append(torch.nn.functional.pad(y, (0, spec.seq_len - seq), value=IGNORE))
    return torch.cat(inputs), torch.cat(labels)


class Mqar(GeneratedTokenTask):
    """MQAR over fixed generated train and test sets; accuracy at query positions. With `mixture`, the
    training set is a mixture of settings (`generate_mixture`)."""

    kind = "mqar"
    metric = "accuracy"
    make = staticmethod(generate)

    def size(self, split: str) -> int:
        if split == "train" and self.spec.mixture:
            return sum(count for _, _, count in self.spec.mixture)
        return super().size(split)

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        if split == "train" and self.spec.mixture and split not in self._data:
            self._data[split] = generate_mixture(self.spec, rng_for(self.spec.seed, split))
        return super().batch(split, indices)
