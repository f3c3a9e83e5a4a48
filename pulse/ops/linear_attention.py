"""Causal linear attention with an optional per-head decay: S_t = α_t S_{t−1} + k_t v_tᵀ, o_t = q_t S_t.

`chunk_linear_attention` is the fast path: within a chunk of c tokens the outputs come
from one masked (c × c) product, and the state is carried from chunk to chunk. Decays
enter only as exp(g_i − g_j) with j ≤ i, where g is the cumulative log-decay from the
chunk start, so every exponent is ≤ 0 and nothing overflows at any length.
`recurrent_linear_attention` is the per-token loop it must agree with.

# b batch · h heads · t time · n chunks · c chunk length · k key dim · v value dim
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def recurrent_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference. q, k: (b, h, t, k); v: (b, h, t, v); log_decay (≤ 0): (b, h, t); state: (b, h, k, v)."""
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, dk, v.shape[-1]) if state is None else state
    outs = []
    for i in range(t):
        if log_decay is not None:
            s = log_decay[:, :, i, None, None].exp() * s
        s = s + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, i], s))
    return torch.stack(outs, dim=2), s


def chunk_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunkwise-parallel form of `recurrent_linear_attention`; same arguments, same results."""
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    s0 = q.new_zeros(b, h, dk, dv) if state is None else state
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # padded tokens have k = v = 0 and decay 1, so they leave outputs and state untouched
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
        if log_decay is not None:
            log_decay = F.pad(log_decay, (0, pad))
    q, k, v = q.view(b, h, n, c, dk), k.view(b, h, n, c, dk), v.view(b, h, n, c, dv)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    scores = q @ k.transpose(-1, -2)  # (b, h, n, c, c)
    if log_decay is None:
        scores = scores.masked_fill(~causal, 0.0)
        local = k.transpose(-1, -2) @ v  # (b, h, n, k, v): what each chunk adds to the state
        ends = s0.unsqueeze(2) + local.cumsum(dim=2)
        starts = torch.cat((s0.unsqueeze(2), ends[:, :, :-1]), dim=2)  # (b, h, n, k, v): state before each chunk
        out = scores @ v + q @ starts
        return out.reshape(b, h, n * c, dv)[:, :, :t], ends[:, :, -1]
    g = log_decay.view(b, h, n, c).cumsum(dim=-1)  # (b, h, n, c): log decay from the chunk start to token i
    within = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()  # exp(g_i − g_j), j ≤ i
    scores = scores * within
    to_end = (g[..., -1:] - g).exp()  # (b, h, n, c): decay from token j to the chunk end
    local = (k * to_end.unsqueeze(-1)).transpose(-1, -2) @ v  # (b, h, n, k, v)
    chunk_decay = g[..., -1].exp()  # (b, h, n)
    s, starts = s0, []
    for i in range(n):
        starts.append(s)
        s = chunk_decay[:, :, i, None, None] * s + local[:, :, i]
    start = torch.stack(starts, dim=2)  # (b, h, n, k, v)
    out = scores @ v + (q * g.exp().unsqueeze(-1)) @ start
    return out.reshape(b, h, n * c, dv)[:, :, :t], s
