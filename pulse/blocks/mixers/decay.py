"""The learned per-head decay of the SSD / gated-delta-rule mixers: log α_t = −exp(A_log) · softplus(Δ_t + b_Δ)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pulse.contract import no_weight_decay


def decay_parameters(num_heads: int, **factory) -> tuple[nn.Parameter, nn.Parameter]:
    """(A_log, dt_bias), one each per head, both excluded from weight decay; fill them with `init_decay_`."""
    return (no_weight_decay(nn.Parameter(torch.empty(num_heads, **factory))),
            no_weight_decay(nn.Parameter(torch.empty(num_heads, **factory))))


@torch.no_grad()
def init_decay_(A_log: Tensor, dt_bias: Tensor, *, a_min: float, a_max: float = 16.0,
                dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
    """As in Mamba-2 / Gated DeltaNet: A ~ U(a_min, a_max); softplus(b_Δ) log-uniform in [dt_min, dt_max]."""
    A_log.copy_(torch.empty_like(A_log).uniform_(a_min, a_max).log())
    dt = torch.exp(torch.rand_like(dt_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=1e-4)
    dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
