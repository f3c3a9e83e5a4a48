"""How long `pulse benchmark` will take, said before it starts.

Each (system, task) trains one example — drawn from the task, forward and backward through the
model as its run builds it — and the time it takes is the unit: a run's remaining steps × batch
size of those, plus its evals (the final one and any `train.eval_every` ones) × the held-out
examples each scores at a third of it (a forward pass alone). It is a projection from one
example (lengths vary, the first pass carries warm-up costs, the machine's load changes), printed
so that a suite that would take hours is known to before it starts, not found at 300 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pulse.experiments.sweep import finished
from pulse.storage.rundir import RunDir
from pulse.train.progress import fmt_duration


def example_seconds(recipe: Any) -> float:
    """Seconds to draw one training example of `recipe`'s task and run it forward and backward."""
    from pulse.assemble import build_model
    from pulse.evaluation.evaluate import autocast, to_device
    from pulse.runtime.ddp import pick_device
    from pulse.tasks import task_of

    threads = torch.get_num_threads()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    try:
        task = task_of(recipe)
        device = pick_device(recipe.train.device)
        torch.manual_seed(recipe.train.seed)
        model = build_model(recipe, device=device)
        head = task.make_head(model, device=device)
        start = time.perf_counter()
        batch = task.train_batch(0, batch_size=1, seed=recipe.train.seed)
        with autocast(device, recipe.train.precision):
            out = task.forward(model, head, to_device(batch, device))
        out["loss_sum"].backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def run_seconds(point: Any, per_example: float, eval_examples: int) -> float:
    """The projected seconds of one run from where its directory stands (0 when finished)."""
    if finished(point):
        return 0.0
    spec = point.recipe.train
    complete = RunDir(point.out_dir, writer=False).complete()
    done = complete[-1][0] if complete else 0
    evals = 1 + ((spec.steps - 1) // spec.eval_every - done // spec.eval_every if spec.eval_every else 0)
    return per_example * ((spec.steps - done) * spec.batch_size + evals * eval_examples / 3)


def project(cells: Sequence[Any], say: Callable[[str], None]) -> float:
    """Say each cell's projected time and the total (finished runs take none); returns the total seconds."""
    total = 0.0
    for cell in cells:
        todo = [p for p in cell.points if not finished(p)]
        if not todo:
            continue
        per_example = example_seconds(todo[0].recipe)
        seconds = sum(run_seconds(p, per_example, cell.eval_examples) for p in todo)
        spec = todo[0].recipe.train
        total += seconds
        say(f"{cell.system}/{cell.task}: {len(todo)} run(s) of {spec.steps} steps × batch {spec.batch_size} and "
            f"evals of {cell.eval_examples} examples, at {per_example:.3g} s an example (measured now): "
            f"~{fmt_duration(seconds)}")
    if total:
        say(f"projected time of the runs to train: ~{fmt_duration(total)} (from one example per task; --budget "
            "scales it, Ctrl-C stops with every run's progress saved)")
    return total
