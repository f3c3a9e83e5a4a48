"""The helpers a loop over batches shares with evaluation: batches to the device, mixed precision, sums over ranks."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from pulse.runtime import ddp

Batch = dict[str, Tensor]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reduce_sums(sums: dict[str, Tensor | float], d: ddp.Dist, device: torch.device) -> dict[str, float]:
    """Sum named statistics over ranks; every rank gets the same dict."""
    keys = ddp.all_keys(list(sums), d)
    vector = torch.tensor([float(sums.get(k, 0.0)) for k in keys], dtype=torch.float64, device=device)
    ddp.all_sum(vector, d)
    return dict(zip(keys, vector.tolist()))
