"""Channel mixers applied to each token on its own.

# b batch · t time · d model · f hidden
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def hidden_width(dim: int, mult: float) -> int:
    """mult · dim rounded up to a multiple of 8 (friendlier matmul shapes)."""
    return 8 * math.ceil(mult * dim / 8)


class GeluMLP(nn.Module):
    """y = W2 gelu(W1 x + b1) + b2.

    Cost: 4·d·f FLOPs per token. Params: 2·d·f (+ f + d with bias).
    """

    def __init__(self, dim: int, *, hidden_mult: float = 4.0, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.dim, self.hidden, self.bias = dim, hidden_width(dim, hidden_mult), bias
        self.up = nn.Linear(dim, self.hidden, bias=bias, device=device, dtype=dtype)
        self.down = nn.Linear(self.hidden, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))

    def flops_per_token(self, seq_len: int) -> float:
        return 4.0 * self.dim * self.hidden

    def param_count(self) -> int:
        return 2 * self.dim * self.hidden + (self.hidden + self.dim if self.bias else 0)


class SwiGLU(nn.Module):
    """y = W2 (silu(W1 x) ⊙ W3 x)  (Shazeer, 2020).

    Cost: 6·d·f FLOPs per token. Params: 3·d·f.
    """

    def __init__(self, dim: int, *, hidden_mult: float = 8 / 3, device=None, dtype=None):
        super().__init__()
        self.dim, self.hidden = dim, hidden_width(dim, hidden_mult)
        self.gate_up = nn.Linear(dim, 2 * self.hidden, bias=False, device=device, dtype=dtype)
        self.down = nn.Linear(self.hidden, dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)

    def flops_per_token(self, seq_len: int) -> float:
        return 6.0 * self.dim * self.hidden

    def param_count(self) -> int:
        return 3 * self.dim * self.hidden
