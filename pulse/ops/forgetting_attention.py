"""Forgetting attention (FoX, Lin et al. 2025): causal softmax attention whose logits carry the summed
log forget gates between key and query.

    o_i = Σ_{j≤i} exp(s_ij) v_j / Σ_{j≤i} exp(s_ij),   s_ij = q_i·k_j · scale + Σ_{l=j+1..i} log f_l

With c the cumulative log-forget (c_i = Σ_{l≤i} log f_l) the bias is c_i − c_j, an additive float mask
for scaled_dot_product_attention: `forgetting_attention` is that, a block of queries at a time;
`forgetting_attention_reference` is the per-token recurrence of a KV cache whose every key's
log-decay grows by log f_t at each token. Both honour document starts: a query sees the keys of its
own document only.

# b batch · h heads · t queries · m keys (cached + new) · e head dim
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def forgetting_attention(q: Tensor, k: Tensor, v: Tensor, cum: Tensor, *, first: Tensor | None = None,
                         scale: float | None = None, block: int = 512) -> Tensor:
    """Forgetting attention through SDPA with an additive float mask, `block` queries at a time.

    q (b, h, t, e) are the last t of the m positions of k, v (b, h, m, e); cum (b, h, m) is the
    cumulative log-forget at every position (any offset: only differences enter), so query i (at
    position m − t + i) adds cum[m − t + i] − cum[j] to its logit for key j. `first` (b, t): the first
    key each query may see (document starts), None for all. A block reads only the keys from its
    earliest visible one to its last query: memory b·h·block·m, never (t, m) at once. Returns (b, h, t, e).
    """
    t, m = q.shape[2], k.shape[2]
    n = m - t
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keys = torch.arange(m, device=q.device)
    outs = []
    for i in range(0, t, block):
        j = min(i + block, t)
        lo = 0 if first is None else int(first[:, i:j].min())
        visible = keys[lo : n + j] <= n + keys[i:j, None]  # (j − i, w): causal
        if first is not None:
            visible = (visible & (keys[lo : n + j] >= first[:, i:j, None])).unsqueeze(1)  # (b, 1, j − i, w)
        bias = cum[:, :, n + i : n + j, None] - cum[:, :, None, lo : n + j]  # (b, h, j − i, w)
        bias = bias.masked_fill(~visible, float("-inf")).to(q.dtype)
        outs.append(F.scaled_dot_product_attention(q[:, :, i:j], k[:, :, lo : n + j], v[:, :, lo : n + j],
                                                   attn_mask=bias, scale=scale))  # (b, h, j − i, e)
    return torch.cat(outs, dim=2)


def forgetting_attention_reference(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, *,
                                   resets: Tensor | None = None, scale: float | None = None) -> Tensor:
    """The per-token recurrence, from an empty cache: at token i every cached key's log-decay grows
    by log f_i (a document start, resets[:, i], sets it to −∞: the cache is forgotten), k_i joins with
    log-decay 0, and o_i = softmax(q_i·K · scale + decay) V. q, k, v (b, h, t, e); log_f (b, h, t)."""
    b, h, t, e = q.shape
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    decay = q.new_zeros(b, h, 0)
    outs = []
    for i in range(t):
        decay = decay + log_f[:, :, i : i + 1]
        if resets is not None:
            decay = torch.where(resets[:, i].view(b, 1, 1), float("-inf"), decay)
        decay = torch.cat((decay, q.new_zeros(b, h, 1)), dim=2)  # (b, h, i + 1)
        logits = torch.einsum("bhe,bhje->bhj", q[:, :, i], k[:, :, : i + 1]) * scale + decay
        outs.append(torch.einsum("bhj,bhje->bhe", torch.softmax(logits, dim=-1), v[:, :, : i + 1]))
    return torch.stack(outs, dim=2)
