"""Causal multi-head softmax attention with a KV cache.

# b batch · t new tokens · n cached tokens · d model · h heads · e head dim
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.layers.positions import Rotary
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, first_keys, starts_mask, step_mask


class CausalSelfAttention(nn.Module):
    """y = W_o · softmax(q kᵀ / √e + causal mask) v, per head, via scaled_dot_product_attention.

    With document starts (`doc_starts`) the mask is block-diagonal: a query sees the keys of its
    own document only; the state then also records where the last document began ("start", (b,)),
    so later calls and `step` keep to it (the cache keeps the earlier keys, masked).
    State: the KV cache, 2·n·d numbers after n tokens. Cost per token at context n:
    8·d² (projections) + 4·n·d (scores and mixing). Params: 4·d² (+ 4·d with bias).
    `capture_sink`, when set (pulse.visualization.capture), is called with ("attention",
    probabilities (b, h, t, n+t)), computed explicitly since SDPA returns none; unset (the
    default) it costs one attribute test.
    """

    capture_sink: Callable[[str, Tensor], None] | None = None

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        bias: bool = False,
        rotary_base: float | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide dim ({dim}); pick a divisor of {dim}.")
        self.dim, self.num_heads, self.head_dim, self.bias = dim, num_heads, dim // num_heads, bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias, device=device, dtype=dtype)
        self.out = nn.Linear(dim, dim, bias=bias, device=device, dtype=dtype)
        self.rotary = Rotary(self.head_dim, base=rotary_base) if rotary_base is not None else None

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.qkv.weight.device
        dtype = dtype if dtype is not None else self.qkv.weight.dtype
        empty = torch.zeros(batch, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        b, t, d = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        resets = starts_mask(doc_starts, b, t, x.device, type(self).__name__)
        n = state["k"].shape[2]
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (b, h, t, e) each
        if self.rotary is not None:
            q, k = self.rotary(q, offset=n), self.rotary(k, offset=n)
        k = torch.cat((state["k"], k), dim=2)  # (b, h, n+t, e)
        v = torch.cat((state["v"], v), dim=2)
        new = {"k": k, "v": v}
        # query i sits at absolute position n+i and may see keys 0..n+i — of its own document only; built only
        # where it is read (t × (n+t) bytes: a 64k-token prefill would hold 4 GiB of it for nothing)
        mask = (torch.ones(t, n + t, dtype=torch.bool, device=x.device).tril(diagonal=n)
                if n or self.capture_sink is not None else None)
        if resets is not None or "start" in state:
            first = first_keys(resets, state.get("start"), b, n, t, x.device)  # (b, t)
            new["start"] = first[:, -1]
            if self.capture_sink is None:
                y = self._by_blocks(q, k, v, first, n)
            else:  # the figures need every probability: one dense masked pass
                mask = mask & (torch.arange(n + t, device=x.device) >= first.unsqueeze(-1))  # (b, t, n+t)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1))
        elif n == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if self.capture_sink is not None:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~(mask.unsqueeze(1) if mask.ndim == 3 else mask), float("-inf"))
            self.capture_sink("attention", torch.softmax(scores, dim=-1).detach())  # (b, h, t, n+t)
        y = self.out(y.transpose(1, 2).reshape(b, t, d))
        return y, new

    @staticmethod
    def _by_blocks(q: Tensor, k: Tensor, v: Tensor, first: Tensor, n: int, block: int = 512) -> Tensor:
        """Attention with document starts, a block of queries at a time: block [i, j) reads only the keys from
        the earliest document start among its queries (over the batch) to its last query, under a mask of
        its own. With many documents per window this reads a fraction of the keys a dense (t, n+t) mask
        would, and never builds that mask."""
        t = q.shape[2]
        keys = torch.arange(n + t, device=q.device)
        outs = []
        for i in range(0, t, block):
            j = min(i + block, t)
            lo = int(first[:, i:j].min())
            visible = (keys[lo : n + j] >= first[:, i:j, None]) & (keys[lo : n + j] <= n + keys[i:j, None])
            outs.append(F.scaled_dot_product_attention(q[:, :, i:j], k[:, :, lo : n + j], v[:, :, lo : n + j],
                                                       attn_mask=visible.unsqueeze(1)))  # (b, h, j − i, e)
        return torch.cat(outs, dim=2)

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        y, state = self.forward(x_t.unsqueeze(1), state, doc_starts=None if rows is None else rows.unsqueeze(1))
        return y.squeeze(1), state

    def flops_per_token(self, seq_len: int) -> float:
        # token i attends i+1 keys; averaged over a sequence of seq_len tokens: (seq_len+1)/2
        return 8.0 * self.dim**2 + 4.0 * self.dim * (seq_len + 1) / 2

    def state_numel(self, seq_len: int) -> int:
        return 2 * seq_len * self.dim

    def param_count(self) -> int:
        return 4 * self.dim**2 + (4 * self.dim if self.bias else 0)
