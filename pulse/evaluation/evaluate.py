"""Evaluation: a model (and task head) on a task's held-out set, or a saved checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.api.source import open_source
from pulse.errors import PulseError
from pulse.evaluation.cost import check_memory, cost
from pulse.runtime import ddp
from pulse.runtime.device import autocast, reduce_sums, to_device
from pulse.storage.checkpoint import load_weights
from pulse.tasks import task_of
from pulse.tasks.base import Task


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, head: nn.Module | None, *, batch_size: int, device: torch.device,
             precision: str = "float32", dist: ddp.Dist | None = None) -> dict[str, float]:
    """The task's metrics on its held-out set (each rank scores its share; the sums are combined)."""
    d = dist or ddp.Dist(0, 1, 0, device)
    modules = [m for m in (model, head) if m is not None]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    sums: dict[str, float] = {}
    try:
        for batch in task.eval_batches(batch_size, rank=d.rank, world=d.world):
            with autocast(device, precision):
                out = task.forward(model, head, to_device(batch, device))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    return task.metrics(reduce_sums(sums, d, device))


@dataclass
class EvalResult:
    location: Path
    recipe: Any
    task: Task
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)  # e.g. a damaged newest checkpoint that was skipped


def evaluate_checkpoint(location: str | Path, *, task: dict[str, Any] | None = None, overrides: list[str] = (),
                        batch_size: int | None = None, device: str = "auto",
                        allow_unverified: bool = False) -> EvalResult:
    """Rebuild a checkpoint's model (a run's newest) with its task head, and score it on its task, or on `task`
    (a [task] table)."""
    source = open_source(location, overrides, tables={"task": task} if task is not None else None,
                         allow_unverified=allow_unverified)
    path = source.require_weights("evaluation")
    stored = source.stored_tokenizer()
    source.check_paths("task", unused=("task.tokenizer",) if stored is not None else ())
    recipe = source.recipe
    if recipe.task is None:
        raise PulseError(
            f"{path}: the stored recipe has no [task]; pass --task KIND (or a TOML file with a [task] table)."
        )
    trained_task = (source.stored.get("task") or {}).get("kind")
    dev = ddp.pick_device(device)
    model = source.build(device=dev)
    # a task that reads text reads it with the run's own tokenizer (the one stored beside the weights wins)
    task_obj = task_of(recipe, stored=stored)
    task_obj.check_model(model)
    head = task_obj.make_head(model, device=dev)
    if head is not None:
        if source.head is None or recipe.task.kind != trained_task:
            raise PulseError(
                f"task `{recipe.task.kind}` reads the model through a trained task head, but {path.parent} has none "
                f"for it (the model was trained on `{trained_task}`); train on `{recipe.task.kind}` first."
            )
        load_weights(head, source.head, allow_unverified=allow_unverified)
    size = batch_size or recipe.train.eval_batch_size or recipe.train.batch_size
    seq_len = getattr(recipe.task, "seq_len", None)
    if isinstance(seq_len, int) and seq_len > 0:  # without the logits (a task may score a few positions): a floor
        check_memory(lambda n: cost(model, n, batch=size, logits=False), [seq_len], option="pulse eval",
                     device=str(dev), change="give a shorter task.seq_len (--set task.seq_len=…) or a smaller "
                                             "--batch-size")
    metrics = evaluate(task_obj, model, head, batch_size=size, device=dev, precision=recipe.train.precision)
    return EvalResult(location=path.parent, recipe=recipe, task=task_obj, metrics=metrics, notes=source.notes)
