"""Writing tokens into slots: each slot attends to the tokens of a chunk.

# b batch · t tokens · s slots · d state dim · h heads · e head dim
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError


class TokenToStateRouter(nn.Module):
    """u_i = W_o · concat_h softmax_t((W_q h_i)_h · (W_k x_t)_h / √e) (W_v x_t)_h — slots query the tokens.

    Routing depends on slot content (queries) and token content (keys), and each slot's
    weights over the tokens form a distribution. Cost for s slots and t tokens of width
    d_t: 4·t·d_t·d + 4·s·d² + 4·s·t·d FLOPs. Params: 2·d² + 2·d_t·d (d_t = token_dim, default d).
    """

    def __init__(self, slot_dim: int, *, token_dim: int | None = None, num_heads: int = 4, device=None, dtype=None):
        super().__init__()
        if slot_dim % num_heads:
            raise PulseError(
                f"num_heads ({num_heads}) must divide slot_dim ({slot_dim}); pick a divisor of {slot_dim}."
            )
        self.slot_dim, self.token_dim = slot_dim, token_dim or slot_dim
        self.num_heads, self.head_dim = num_heads, slot_dim // num_heads
        self.q = nn.Linear(slot_dim, slot_dim, bias=False, device=device, dtype=dtype)
        self.kv = nn.Linear(self.token_dim, 2 * slot_dim, bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(slot_dim, slot_dim, bias=False, device=device, dtype=dtype)

    def heads(self, x: Tensor) -> Tensor:
        """(…, n, d) → (…, h, n, e)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def project_tokens(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the tokens, (…, t, d) each; computed once for a whole sequence."""
        return self.kv(tokens).chunk(2, dim=-1)

    def queries(self, slots: Tensor) -> Tensor:
        """Per-head slot queries (…, h, s, e)."""
        return self.heads(self.q(slots))

    def weights(self, q: Tensor, k: Tensor) -> Tensor:
        """Routing weights softmax_t(q·k / √e) (…, h, s, t) — what `route` mixes the values with."""
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)

    def route(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Slot updates (…, s, d) from per-head queries (…, h, s, e) and keys/values (…, h, t, e)."""
        mixed = F.scaled_dot_product_attention(q, k, v)  # (…, h, s, e)
        return self.out(mixed.transpose(-3, -2).flatten(-2))

    def forward(self, slots: Tensor, tokens: Tensor, *, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Updates (b, s, d) for slots (b, s, d) or (s, d) from tokens (b, t, d_t); with return_weights,
        also the routing weights (b, s, t), averaged over heads (each row sums to 1)."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.token_dim or slots.shape[-1] != self.slot_dim:
            raise PulseError(
                f"TokenToStateRouter expects slots (batch, slots, {self.slot_dim}) and tokens "
                f"(batch, time, {self.token_dim}), got {tuple(slots.shape)} and {tuple(tokens.shape)}."
            )
        if slots.ndim == 2:
            slots = slots.expand(tokens.shape[0], -1, -1)
        k, v = self.project_tokens(tokens)
        q, k, v = self.queries(slots), self.heads(k), self.heads(v)
        if not return_weights:
            return self.route(q, k, v)
        weights = self.weights(q, k)  # (b, h, s, t)
        update = self.out((weights @ v).transpose(-3, -2).flatten(-2))
        return update, weights.mean(dim=1)

    def flops(self, num_slots: int, num_tokens: int) -> float:
        """Forward FLOPs of one call writing num_tokens tokens into num_slots slots."""
        d = self.slot_dim
        return 4.0 * num_tokens * self.token_dim * d + 4.0 * num_slots * d * d + 4.0 * num_slots * num_tokens * d

    def param_count(self) -> int:
        return 2 * self.slot_dim**2 + 2 * self.token_dim * self.slot_dim
