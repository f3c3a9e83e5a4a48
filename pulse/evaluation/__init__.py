"""Evaluation: a model on its task's held-out set, the context curve, passkey retrieval, lm-evaluation-harness,
and the memory/time projection every evaluation checks before it starts. `pulse eval` calls into here."""

from pulse.evaluation.evaluate import EvalResult, evaluate, evaluate_checkpoint

__all__ = ["EvalResult", "evaluate", "evaluate_checkpoint"]
