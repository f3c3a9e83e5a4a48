"""The task contract, and the deterministic sampling every task shares.

A task makes batches and turns a model's outputs on a batch into summed statistics
(loss, hits, counts); the trainer owns everything else. Batches depend only on
(seed, step, micro-batch, rank, world size), never on what ran before, so a resumed
run sees exactly the data an uninterrupted one would, and the union over ranks and
micro-batches of one step is the same global batch whatever the world size.

# b batch · t time · d model · v vocab · n labelled positions
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.models.lm import IGNORE  # the label of a position with no loss (tasks import it from here)

Batch = dict[str, Tensor]
Sums = dict[str, Tensor]


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a task. pulse.contract.check_task holds a task to it, on the tiny example its
    spec gives (pulse.specs.task_base.TaskSpec.example); docs/tasks.md says how to add one."""

    kind: str
    metric: str  # the name of the headline metric in `metrics()`
    higher_is_better: bool

    def check_model(self, model: nn.Module) -> None:
        """Raise PulseError, saying what to change, if the model cannot do this task."""

    def make_head(self, model: nn.Module, *, device=None, dtype=None) -> nn.Module | None:
        """A task-specific output layer trained with the model, or None when the model's own head serves."""

    def train_batch(self, step: int, *, batch_size: int, seed: int, micro: int = 0, accum: int = 1,
                    rank: int = 0, world: int = 1) -> Batch:
        """This rank's micro-batch `micro` of optimiser step `step` (global batch `batch_size`)."""

    def eval_batches(self, batch_size: int, *, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """This rank's share of the held-out set, in fixed order."""

    def targets(self, batch: Batch) -> int:
        """How many loss targets the batch holds (the loss is their mean over the global batch)."""

    def tokens(self, batch: Batch) -> int:
        """Input positions the batch feeds the model (for tokens/s)."""

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        """Summed statistics; `loss_sum` carries the gradient, `count` is `targets(batch)`."""

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Named metrics from statistics summed over batches (and ranks); includes `loss` and `metric`."""


# The optional features a task may have, each a small Protocol: callers ask `isinstance(task, PreparesData)`, never
# `hasattr`. A task kind that has the method is one of them without declaring it.


@runtime_checkable
class PreparesData(Protocol):
    """A task with data to make ready before training (a text corpus tokenized into its cache)."""

    def prepare(self, *, progress: Any = None, say: Any = None) -> Any: ...


@runtime_checkable
class ChecksData(Protocol):
    """A task whose files can be checked cheaply before any training starts (`pulse benchmark` checks every task)."""

    def check_data(self) -> None:
        """Raise PulseError, saying what to change, if the task's files are missing, misplaced or unreadable; cheap
        (it reads no more than it must). Generated tasks have nothing to check, and are not ChecksData."""


@runtime_checkable
class FitsModel(Protocol):
    """A task that rewrites a recipe's [model] table to its own sizes (vocabulary, input and output widths)."""

    def fit_model(self, model: dict[str, Any]) -> dict[str, Any]: ...


def micro_size(batch_size: int, accum: int, world: int) -> int:
    if batch_size % (accum * world):
        raise PulseError(
            f"train.batch_size ({batch_size}) must be divisible by train.grad_accum × processes "
            f"({accum} × {world} = {accum * world}); pick a batch size that is a multiple of {accum * world}."
        )
    return batch_size // (accum * world)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_indices(n: int, step: int, *, batch_size: int, seed: int, micro: int = 0, accum: int = 1,
                  rank: int = 0, world: int = 1) -> np.ndarray:
    """Example indices of one micro-batch: a fresh permutation of the n examples per epoch.

    Global position p = step·batch_size + j walks through the epochs; rank r takes the
    r-th contiguous share of the global batch and micro-batch m the m-th part of that.
    """
    per = micro_size(batch_size, accum, world)
    start = step * batch_size + rank * (batch_size // world) + micro * per
    positions = np.arange(start, start + per, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(per, dtype=np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _permutation(n, seed, int(epoch))[offsets[where]]
    return out


def eval_indices(n: int, batch_size: int, *, rank: int = 0, world: int = 1) -> Iterator[np.ndarray]:
    """Rank r's share (every world-th example from r) of n held-out examples, in batches."""
    mine = np.arange(rank, n, world, dtype=np.int64)
    for i in range(0, len(mine), batch_size):
        yield mine[i : i + batch_size]


class IndexedTask:
    """A task whose splits ("train", "test") are numbered examples.

    Subclasses define `size(split) -> int` and `batch(split, indices) -> Batch`, plus
    `check_model` and `forward`; sampling, evaluation order and the accuracy metric
    come from here.
    """

    kind: str
    metric = "accuracy"
    higher_is_better = True

    def train_batch(self, step: int, *, batch_size: int, seed: int, micro: int = 0, accum: int = 1,
                    rank: int = 0, world: int = 1) -> Batch:
        idx = train_indices(self.size("train"), step, batch_size=batch_size, seed=seed, micro=micro, accum=accum,
                            rank=rank, world=world)
        return self.batch("train", idx)

    def eval_batches(self, batch_size: int, *, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        for idx in eval_indices(self.size("test"), batch_size, rank=rank, world=world):
            yield self.batch("test", idx)

    def make_head(self, model: nn.Module, *, device=None, dtype=None) -> nn.Module | None:
        return None

    def targets(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def tokens(self, batch: Batch) -> int:
        return batch["ids"].numel()

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        count = max(sums.get("count", 0.0), 1.0)
        return {"loss": sums["loss_sum"] / count, "accuracy": sums.get("hits", 0.0) / max(sums.get("total", 0.0), 1.0)}


def classification_sums(logits: Tensor, targets: Tensor) -> Sums:
    logits = logits.float()
    count = torch.tensor(float(targets.numel()), device=logits.device)
    return {
        "loss_sum": F.cross_entropy(logits, targets, reduction="sum"),
        "count": count,
        "hits": (logits.argmax(-1) == targets).sum().float(),
        "total": count,
    }


def rng_for(seed: int, split: str, index: int | None = None) -> np.random.Generator:
    """An independent random stream per (seed, split[, example index])."""
    key = [seed, {"train": 0, "test": 1}[split]]
    return np.random.default_rng(key if index is None else [*key, index])


def bits_per_byte(loss_nats: float) -> float:
    return loss_nats / math.log(2)

