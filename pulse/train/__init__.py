"""Training: the loop, its progress lines, the optimiser, initialization from a checkpoint, the stop that saves.
`pulse train` calls into here; evaluation lives in pulse.evaluation, sweeps and suites in pulse.experiments."""

from pulse.train.loop import train
from pulse.train.result import Reporter, RunResult, TaskModule

__all__ = ["Reporter", "RunResult", "TaskModule", "train"]
