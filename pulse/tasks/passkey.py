"""Passkey retrieval (Mohtashami & Jaggi, 2023): find a number hidden at a depth of filler text.

    [filler …] The pass key is 71432. Remember it. 71432 is the pass key. [filler …]
    What is the pass key? The pass key is 71432
                                          ^^^^^ labelled: the answer, predicted token by token

The filler is one sentence block repeated ("The grass is green. The sky is blue. …"); the key
sentence sits at depth d of it (0: at the start, 1: just before the question). Each example
is generated from (seed, split, index), with the whole sequence exactly seq_len tokens of the
model's tokenizer. `accuracy` is the share of examples whose every answer token is the
greedy one; `digit_accuracy` the share of answer tokens.

`passkey_grid` scores any language model over lengths × depths (`pulse eval RUN --passkey`),
whatever it was trained on.

# b batch · t time · v vocab · n labelled positions
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulse.data.tokenizer import Tokenizer
from pulse.errors import PulseError
from pulse.specs.tasks import PasskeySpec
from pulse.tasks.base import IGNORE, Batch, Sums, rng_for
from pulse.tasks.io import TokenizedTask, labelled_logits

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is "


class Passkey(TokenizedTask):
    """Passkey retrieval at task.seq_len; exact-match accuracy on the answer."""

    kind = "passkey"
    metric = "accuracy"

    def __init__(self, spec: PasskeySpec, *, tokenizer: Tokenizer | None = None):
        super().__init__(spec, tokenizer=tokenizer)

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def shortest(self, key: str) -> int:
        """The fewest tokens an example with this key takes (no filler): the key sentence, question and answer."""
        tok = self.tokenizer
        return len(tok.encode(KEY.format(key=key))) + len(tok.encode(QUESTION)) + len(tok.encode(key)) - 1

    def example(self, key: str, depth: float, length: int) -> tuple[list[int], int]:
        """(ids of exactly `length` + 1 tokens, how many of the last ones are the answer)."""
        tok = self.tokenizer
        key_ids, question, answer = tok.encode(KEY.format(key=key)), tok.encode(QUESTION), tok.encode(key)
        room = length + 1 - len(key_ids) - len(question) - len(answer)
        if room < 0:
            raise PulseError(f"a passkey example needs at least {length + 1 - room} tokens; raise task.seq_len.")
        filler = tok.encode(FILLER)
        stream = (filler * (room // max(len(filler), 1) + 2))[:room]
        cut = int(round(depth * room))
        return stream[:cut] + key_ids + stream[cut:] + question + answer, len(answer)

    def _key(self, rng: np.random.Generator) -> str:
        return str(int(rng.integers(10 ** (self.spec.digits - 1), 10**self.spec.digits)))

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        rows = []
        for i in indices:
            rng = rng_for(self.spec.seed, split, int(i))
            lo, hi = self.spec.depth_min, self.spec.depth_max
            depth = rng.uniform(lo, hi) if split == "train" else lo + (hi - lo) * int(i) / max(self.size(split) - 1, 1)
            rows.append(self.example(self._key(rng), depth, self.spec.seq_len))
        return _batch(rows)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        return answer_sums(model, batch)

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss_sum"] / max(sums["count"], 1.0),
                "accuracy": sums["exact"] / max(sums["examples"], 1.0),
                "digit_accuracy": sums["hits"] / max(sums["count"], 1.0)}


def _batch(rows: list[tuple[list[int], int]]) -> Batch:
    ids = torch.tensor([r[0] for r in rows], dtype=torch.long)  # (b, t+1)
    labels = torch.full_like(ids, IGNORE)
    for b, (_, n) in enumerate(rows):
        labels[b, -n:] = ids[b, -n:]
    return {"ids": ids[:, :-1], "labels": labels[:, 1:]}


def answer_sums(model: nn.Module, batch: Batch) -> Sums:
    """Loss and hits over the answer tokens, and exact matches per example."""
    logits, targets = labelled_logits(model, batch["ids"], batch["labels"])  # (n, v), (n,)
    right = (logits.float().argmax(-1) == targets).float()
    per_row = (batch["labels"] != IGNORE).sum(1)  # answer tokens per example
    exact = torch.stack([chunk.all() for chunk in right.split(per_row.tolist())]).float()
    return {"loss_sum": F.cross_entropy(logits.float(), targets, reduction="sum"),
            "count": torch.tensor(float(targets.numel()), device=targets.device), "hits": right.sum(),
            "exact": exact.sum(), "examples": torch.tensor(float(len(per_row)), device=targets.device)}


def grid_keys(task: Passkey, trials: int) -> list[str]:
    """The keys `passkey_grid` hides: the same `trials` in every cell, drawn from the task's seed."""
    return [task._key(rng_for(task.spec.seed + 7, "test", k)) for k in range(trials)]


def passkey_grid(model: nn.Module, task: Passkey, lengths: list[int], depths: list[float], *, trials: int = 5,
                 batch_size: int = 4) -> list[dict[str, float]]:
    """Exact-match accuracy for every (length, depth): `trials` keys each, drawn from the task's seed. The rows
    of ids are built a batch at a time (a batch of 1M-token rows is 8 MB per row in Python lists)."""
    cells = []
    was = model.training
    model.eval()
    keys = grid_keys(task, trials)
    try:
        with torch.no_grad():
            for length in lengths:
                for depth in depths:
                    exact = 0.0
                    for i in range(0, trials, batch_size):
                        rows = [task.example(key, depth, length) for key in keys[i:i + batch_size]]
                        batch = {k: v.to(next(model.parameters()).device) for k, v in _batch(rows).items()}
                        del rows
                        exact += float(answer_sums(model, batch)["exact"])
                    cells.append({"length": length, "depth": depth, "accuracy": exact / trials, "trials": trials})
    finally:
        model.train(was)
    return cells
