"""Training: the loop, exact resume, DDP, evaluation, plots. `pulse train` and `pulse eval` call into here."""

from pulse.train.evaluate import EvalResult, evaluate, evaluate_checkpoint
from pulse.train.loop import Reporter, RunResult, TaskModule, train

__all__ = ["EvalResult", "Reporter", "RunResult", "TaskModule", "evaluate", "evaluate_checkpoint", "train"]
