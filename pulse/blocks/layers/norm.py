"""Norms with the cost interface summarize uses."""

from __future__ import annotations

from torch import nn


class LayerNorm(nn.LayerNorm):
    """(x − mean) / std · γ + β over the last dim. Params: 2·d."""

    def __init__(self, dim: int, *, eps: float = 1e-5, device=None, dtype=None):
        super().__init__(dim, eps=eps, device=device, dtype=dtype)

    def flops_per_token(self, seq_len: int) -> float:
        return 8.0 * self.normalized_shape[0]

    def param_count(self) -> int:
        return 2 * self.normalized_shape[0]


class RMSNorm(nn.RMSNorm):
    """x / rms(x) · γ over the last dim. Params: d."""

    def __init__(self, dim: int, *, eps: float = 1e-6, device=None, dtype=None):
        super().__init__(dim, eps=eps, device=device, dtype=dtype)

    def flops_per_token(self, seq_len: int) -> float:
        return 4.0 * self.normalized_shape[0]

    def param_count(self) -> int:
        return self.normalized_shape[0]
