"""Generated ListOps (Nangia & Bowman, 2018; the LRA generator's rules): the value of a
nested expression over digits, a 10-way classification.

    [MAX 2 9 [MIN 4 7 ] 0 ]   →   9

Operators: MIN, MAX, MED (median; the lower-middle mean, floored, for an even count),
SM (sum mod 10). The root is an operator; below it each node becomes an operator with
probability 0.25 (never at max_depth) with 2 … max_args arguments, otherwise a digit.
Expressions are redrawn until their length lies in min_len … max_len tokens.

A language model reads the token ids; its hidden state at each row's last token goes
through a task head (d → 10). A sequence model reads one-hot tokens with a padding
mask and answers itself (output_mode 'last' or 'mean', output_dim 10).

# b batch · t time · d model · v vocabulary (16)
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulse.specs.tasks import ListOpsSpec
from pulse.tasks.base import Batch, IndexedTask, Sums, classification_sums
from pulse.tasks.io import is_token_model, require_sequence_model, require_token_model, sequence_outputs

PAD = 0
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = ["<pad>", *(str(d) for d in range(10)), *OPERATORS, END]
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
NUM_CLASSES = 10
OPERATOR_P = 0.25


class _TooLong(Exception):
    pass


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def _node(rng: random.Random, depth: int, spec: ListOpsSpec, out: list[str]) -> int:
    """Append one node's tokens to `out` and return its value."""
    if depth > 1 and (depth >= spec.max_depth or rng.random() >= OPERATOR_P):
        value = rng.randrange(10)
        out.append(str(value))
        return value
    op = rng.choice(OPERATORS)
    out.append(op)
    args = []
    for _ in range(rng.randint(2, spec.max_args)):
        args.append(_node(rng, depth + 1, spec, out))
        if len(out) > spec.max_len:
            raise _TooLong
    out.append(END)
    return _apply(op, args)


def expression(rng: random.Random, spec: ListOpsSpec) -> tuple[list[str], int]:
    """One expression within the length range, and its value."""
    while True:
        tokens: list[str] = []
        try:
            value = _node(rng, 1, spec, tokens)
        except _TooLong:
            continue
        if spec.min_len <= len(tokens) <= spec.max_len:
            return tokens, value


def evaluate(tokens: list[str]) -> int:
    """The value of a token list, computed independently of the generator (a stack machine)."""
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
            continue
        value = _apply(stack[-1][0], stack.pop()[1:]) if tok == END else int(tok)
        if stack:
            stack[-1].append(value)
        else:
            result = value
    return result


class ListOps(IndexedTask):
    """ListOps classification; accuracy of the predicted value."""

    kind = "listops"
    metric = "accuracy"

    def __init__(self, spec: ListOpsSpec):
        self.spec = spec
        self._cache: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def example(self, split: str, index: int) -> tuple[list[str], int]:
        """Expression `index` of a split: its own random stream, so any example can be drawn alone."""
        return expression(random.Random(f"listops:{self.spec.seed}:{split}:{index}"), self.spec)

    def _encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        key = (split, index)
        if key not in self._cache:
            tokens, value = self.example(split, index)
            self._cache[key] = (np.array([TOKEN_ID[tok] for tok in tokens], dtype=np.int64), value)
        return self._cache[key]

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        examples = [self._encoded(split, int(i)) for i in indices]
        t = max(len(ids) for ids, _ in examples)
        ids = np.full((len(examples), t), PAD, dtype=np.int64)
        for row, (tokens, _) in enumerate(examples):
            ids[row, : len(tokens)] = tokens
        return {
            "ids": torch.from_numpy(ids),
            "lengths": torch.tensor([len(tokens) for tokens, _ in examples]),
            "labels": torch.tensor([value for _, value in examples]),
        }

    def targets(self, batch: Batch) -> int:
        return batch["labels"].numel()

    def tokens(self, batch: Batch) -> int:
        return int(batch["lengths"].sum())

    def check_model(self, model: nn.Module) -> None:
        if is_token_model(model):
            require_token_model(model, self.kind, len(VOCAB))
        elif getattr(model, "output_mode", None) == "mean":
            require_sequence_model(model, self.kind, input_dim=len(VOCAB), output_dim=NUM_CLASSES, output_mode="mean")
        else:
            require_sequence_model(model, self.kind, input_dim=len(VOCAB), output_dim=NUM_CLASSES, output_mode="last")

    def make_head(self, model: nn.Module, *, device=None, dtype=None) -> nn.Module | None:
        return nn.Linear(model.dim, NUM_CLASSES, device=device, dtype=dtype) if is_token_model(model) else None

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        ids, lengths = batch["ids"], batch["lengths"]
        if is_token_model(model):
            h, _ = model.features(ids)  # (b, t, d)
            logits = head(h[torch.arange(ids.shape[0], device=ids.device), lengths - 1])  # (b, 10)
        else:
            mask = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)  # (b, t)
            x = F.one_hot(ids, len(VOCAB)).to(next(model.parameters()).dtype)  # (b, t, v)
            logits = sequence_outputs(model, x, mask)
        return classification_sums(logits, batch["labels"])
