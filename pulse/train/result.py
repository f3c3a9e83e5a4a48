"""What the loop hands the outside world: the module DDP wraps, the reporter it talks to, the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from pulse.tasks.base import Batch, Sums, Task


class TaskModule(nn.Module):
    """The model and the task head as one module, whose forward is the task's statistics (what DDP wraps)."""

    def __init__(self, task: Task, model: nn.Module, head: nn.Module | None):
        super().__init__()
        self.task = task
        self.model = model
        self.head = head

    def forward(self, batch: Batch) -> Sums:
        return self.task.forward(self.model, self.head, batch)


class Reporter(Protocol):
    """What the loop tells the outside world (rank 0 only); see pulse.train.progress for the rich one."""

    def start(self, info: dict[str, Any]) -> None: ...

    def step(self, step: int, values: dict[str, float]) -> None: ...

    def eval(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self, result: RunResult) -> None: ...


@dataclass
class RunResult:
    out_dir: Path
    step: int
    steps: int
    elapsed: float
    tokens: int
    params: int
    metric: str
    higher_is_better: bool
    train: dict[str, float]
    eval: dict[str, float]
    stopped: str  # "done", "time limit" or "already complete"
    resumed_from: int | None = None
    checkpoint: Path | None = None
    plots: list[Path] = field(default_factory=list)
    init_from: dict[str, Any] | None = None  # where the weights started (train.init_from), see pulse.train.init

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "step": self.step, "steps": self.steps, "elapsed_s": self.elapsed,
            "tokens": self.tokens, "params": self.params, "metric": self.metric,
            "higher_is_better": self.higher_is_better, "train": self.train, "eval": self.eval,
            "stopped": self.stopped, "resumed_from": self.resumed_from,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None, "plots": [str(p) for p in self.plots],
            "init_from": self.init_from,
        }
