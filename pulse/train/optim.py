"""AdamW with decoupled weight decay on matrices only, and the warm-up + decay schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from pulse.specs.run import TrainSpec

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def param_categories(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by category: embeddings, norms, biases (every vector or scalar), matrices,
    and `tagged` — parameters a block marked with `pulse.contract.no_weight_decay`.

    A tied parameter (the LM head sharing the embedding table) is counted once, as an
    embedding. Order follows module traversal, so it is the same on every run.
    """
    out: dict[str, list[nn.Parameter]] = {"embeddings": [], "norms": [], "biases": [], "matrices": [], "tagged": []}
    seen: set[int] = set()
    owners: list[tuple[nn.Module, str, nn.Parameter]] = [
        (mod, name, p) for mod in module.modules() for name, p in mod.named_parameters(recurse=False)
    ]
    # embeddings first, so a tied head weight lands in their group
    owners.sort(key=lambda item: not isinstance(item[0], nn.Embedding))
    for mod, _, p in owners:
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if getattr(p, "_no_weight_decay", False):
            out["tagged"].append(p)
        elif isinstance(mod, nn.Embedding):
            out["embeddings"].append(p)
        elif _is_norm(mod):
            out["norms"].append(p)
        elif p.ndim < 2:
            out["biases"].append(p)
        else:
            out["matrices"].append(p)
    return out


def make_optimizer(module: nn.Module, spec: TrainSpec) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for category, params in param_categories(module).items():
        (no_decay if category in spec.no_decay or category == "tagged" else decay).extend(params)
    groups = [g for g in ({"params": decay, "weight_decay": spec.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps)


def lr_factor(step: int, spec: TrainSpec) -> float:
    """Multiplier of the peak lr for 0-based optimiser step `step`."""
    if step < spec.warmup_steps:
        return (step + 1) / (spec.warmup_steps + 1)
    if spec.schedule == "constant":
        return 1.0
    span = max(spec.steps - spec.warmup_steps, 1)
    progress = min((step - spec.warmup_steps) / span, 1.0)
    floor = spec.min_lr_ratio
    if spec.schedule == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, spec))
