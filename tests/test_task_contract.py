"""The task contract (pulse.contract.check_task) over every registered task kind, each on the tiny example its
spec gives (`example(folder)`, docs/tasks.md). There is no list of kinds here: a new task kind is covered unedited
(tests/toy_task.py shows it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import pulse
from pulse import contract, registry
from pulse.data.tokenizer import tokenizer_of
from pulse.tasks import build_task, reads_text
from pulse.tasks.base import FitsModel

# the model a task's example runs on unless it names one: one attention layer over 260 ids (bytes and their
# specials), refitted by the task's `fit_model` where it has one
MODEL = {"kind": "lm", "vocab_size": 260, "dim": 16, "depth": 1, "layout": ["attn"],
         "mixers": {"attn": {"kind": "attention", "num_heads": 2}}}


def build(recipe: Any) -> Any:
    """A fresh task object of the recipe, given the recipe's tokenizer when it reads text."""
    return build_task(recipe.task, tokenizer=tokenizer_of(recipe) if reads_text(recipe.task) else None)


def example_recipe(kind: str, folder: Path) -> Any:
    """The tiny recipe of a task kind: its spec's example, on the default model refitted to the task."""
    spec = registry.get(kind, "task").spec
    assert callable(getattr(spec, "example", None)), (
        f"task kind `{kind}`: its spec {spec.__name__} gives no example(folder); derive it from "
        "pulse.specs.task_base.TaskSpec and set example_settings (docs/tasks.md)")
    example = spec.example(folder)
    recipe = pulse.recipe_from_dict({"model": example.get("model", MODEL), "task": example["task"]})
    task = build(recipe)
    if "model" not in example and isinstance(task, FitsModel):
        recipe = pulse.recipe_from_dict({"model": task.fit_model(MODEL), "task": example["task"]})
    return recipe


@pytest.mark.parametrize("kind", registry.kinds("task"))
def test_every_task_kind_keeps_the_task_contract(kind, tmp_path):
    torch.manual_seed(0)
    recipe = example_recipe(kind, tmp_path)
    task = build(recipe)
    assert task.kind == kind
    contract.check_task(task, pulse.build_model(recipe), twin=build(recipe))


# ---- the contract catches what it says it checks ------------------------------------------------------------

class Broken:
    """A working task (the toy parity task) with one fault."""

    kind, metric = "toy_parity", "accuracy"

    def __init__(self, task: Any, fault: str):
        self.task, self.fault, self.calls = task, fault, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def train_batch(self, step: int, **kw: Any) -> Any:
        self.calls += 1
        if self.fault == "call order":  # the data depends on how many batches were asked for before
            step += self.calls
        if self.fault == "ranks":  # every process and micro-batch reads the start of the global batch
            kw["rank"], kw["micro"] = 0, 0
        return self.task.train_batch(step, **kw)

    def eval_batches(self, batch_size: int, *, rank: int = 0, world: int = 1) -> Any:
        if self.fault == "eval ranks":  # every process scores the whole held-out set
            rank, world = 0, 1
        return self.task.eval_batches(batch_size, rank=rank, world=world)

    def forward(self, model: Any, head: Any, batch: Any) -> Any:
        sums = self.task.forward(model, head, batch)
        if self.fault == "detached":
            sums["loss_sum"] = sums["loss_sum"].detach()
        if self.fault == "count":
            sums["count"] = sums["count"] * 2  # as many as the batch holds, twice
        return sums

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = self.task.metrics(sums)
        return {k: v for k, v in out.items() if self.fault != "metric" or k != self.metric}


@pytest.mark.parametrize("fault, message", [
    ("call order", "two tasks from one spec differ"),
    ("ranks", r"micro-batch 1 of rank 1 .* differs"),
    ("eval ranks", "2 processes hold"),
    ("detached", "carries a gradient"),
    ("count", "targets"),
    ("metric", "`accuracy` missing"),
])
def test_the_task_contract_catches_a_broken_task(fault, message):
    from toy_task import Parity, ParitySpec

    model = pulse.build_model(pulse.recipe_from_dict({"model": MODEL}))
    spec = ParitySpec(**ParitySpec.example_settings)
    with pytest.raises(AssertionError, match=message):
        contract.check_task(Broken(Parity(spec), fault), model, twin=Broken(Parity(spec), fault))
    if fault == "ranks":  # the split check alone catches it too
        with pytest.raises(AssertionError, match=r"micro-batches: example \d is not the global batch's"):
            contract.check_task_split(Broken(Parity(spec), fault), model, None, batch_size=4, seed=0)


def test_a_new_task_kind_is_covered_by_the_registry_wide_tests_unedited():
    """Registered before collection (PULSE_TEST_REGISTER), the toy task (one class, one spec, one registration
    line) runs through the task contract and the registry-wide task tests with no edit to any of them."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PULSE_TEST_REGISTER": "toy_task", "HYPOTHESIS_PROFILE": "ci"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "toy_parity",
                           str(here / "test_task_contract.py"), str(here / "test_tasks.py")],
                          env=env, cwd=here.parent, capture_output=True, text=True, timeout=600)
    tail = done.stdout[-3000:]
    assert done.returncode == 0, tail
    assert int(re.search(r"(\d+) passed", tail).group(1)) >= 4, tail
