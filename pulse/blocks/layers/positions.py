"""Position encodings: learned absolute embeddings and rotary embeddings.

# b batch · t time · d model · h heads · e head dim
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pulse.errors import PulseError


class LearnedPositions(nn.Module):
    """x + P[pos : pos + t] with a learned table P of shape (max_seq_len, d).

    Params: max_seq_len · d.
    """

    def __init__(self, dim: int, *, max_seq_len: int = 2048, device=None, dtype=None):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.table = nn.Embedding(max_seq_len, dim, device=device, dtype=dtype)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0, *, index: Tensor | None = None) -> Tensor:  # x: (b, t, d)
        """Positions offset..offset+t−1, or `index` (b, t): each token's own position (e.g. counted
        from its document's start)."""
        end = offset + x.shape[1] if index is None else int(index.max()) + 1
        if end > self.max_seq_len:
            raise PulseError(
                f"sequence reaches position {end}, beyond the learned positions' max_seq_len "
                f"({self.max_seq_len}); raise model.positions.max_seq_len or use rotary positions."
            )
        return x + (self.table.weight[offset:end] if index is None else self.table.weight[index])

    def param_count(self) -> int:
        return self.table.weight.numel()


class Rotary(nn.Module):
    """Rotary embedding (RoFormer): rotate pairs of q/k channels by angle pos · θ^(−2i/e).

    Angles are computed from absolute positions on the fly, so any position works,
    in a full forward or in one `step`. No parameters.
    """

    def __init__(self, head_dim: int, *, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise PulseError(f"rotary positions need an even head dim, got {head_dim}; change dim or num_heads.")
        self.head_dim = head_dim
        self.base = base

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:  # x: (b, h, t, e)
        t, e = x.shape[-2], x.shape[-1]
        inv_freq = self.base ** (-torch.arange(0, e, 2, device=x.device, dtype=torch.float64) / e)
        pos = torch.arange(offset, offset + t, device=x.device, dtype=torch.float64)
        angles = torch.outer(pos, inv_freq)  # (t, e/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2)
