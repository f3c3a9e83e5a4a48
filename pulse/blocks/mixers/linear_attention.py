"""Causal linear (kernelized) attention with an optional normaliser and per-head decay.

# b batch · t time · d model · h heads · e head dim (d / h)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask
from pulse.ops.linear_attention import linear_attention

FeatureMap = Literal["elu1", "relu", "identity"]
Decay = Literal["none", "fixed", "input"]

# GLA's gate normaliser: log α = logsigmoid(·) / 16 keeps α near 1 at initialisation
_GATE_TEMPERATURE = 16.0


class LinearAttention(nn.Module):
    """S_t = α_t S_{t−1} + φ(k_t) v_tᵀ, z_t = α_t z_{t−1} + φ(k_t), y_t = W_o (φ(q_t) S_t / φ(q_t)·z_t), per head.

    φ is elu+1, relu or the identity; without `normalize` the division by φ(q)·z is dropped.
    α is 1 (decay "none"), RetNet's fixed γ_h = 1 − 2^(−5−h) ("fixed"), or σ(w_h·x_t + b_h)^(1/16)
    ("input", GLA-style). State: h·e·e (+ h·e normaliser) numbers, d·e (+ d), whatever the length.
    Cost per token: 8·d² (projections) + 4·c·d (within a chunk of c) + 4·d·e (state), O(n·d·(d + c))
    for n tokens; one `step` is O(d·(d + e)). Params: 4·d² (+ d·h + h with decay "input").
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        feature_map: FeatureMap = "elu1",
        normalize: bool = True,
        decay: Decay = "none",
        chunk_size: int = 64,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide dim ({dim}); pick a divisor of {dim}.")
        if normalize and feature_map == "identity":
            raise PulseError("normalize needs non-negative features; use feature_map elu1 or relu, or normalize=False.")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.feature_map, self.normalize, self.decay = feature_map, normalize, decay
        self.chunk_size, self.eps = chunk_size, eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **factory)
        self.out = nn.Linear(dim, dim, bias=False, **factory)
        self.decay_proj = nn.Linear(dim, num_heads, **factory) if decay == "input" else None

    def _phi(self, x: Tensor) -> Tensor:
        if self.feature_map == "elu1":
            return F.elu(x) + 1
        if self.feature_map == "relu":
            return F.relu(x)
        return x

    def _log_decay(self, x: Tensor) -> Tensor | None:
        """log α ≤ 0 per head and token, (b, h, t), or None without decay."""
        if self.decay == "none":
            return None
        if self.decay == "input":
            return (F.logsigmoid(self.decay_proj(x)) / _GATE_TEMPERATURE).transpose(1, 2)
        # computed in float64: 1 − 2^(−5−h) rounds to 1 in low precision for many heads
        h = torch.arange(self.num_heads, dtype=torch.float64, device=x.device)
        log_gamma = torch.log1p(-torch.exp2(-5.0 - h)).to(x.dtype)
        return log_gamma[:, None].expand(x.shape[0], self.num_heads, x.shape[1])

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (b, h, t, e)
        return self._phi(q) / math.sqrt(self.head_dim), self._phi(k), v

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.qkv.weight.device
        dtype = dtype if dtype is not None else self.qkv.weight.dtype
        h, e = self.num_heads, self.head_dim
        state = {"kv": torch.zeros(batch, h, e, e, device=device, dtype=dtype)}
        if self.normalize:
            state["z"] = torch.zeros(batch, h, e, device=device, dtype=dtype)
        return state

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        b, t, d = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        resets = starts_mask(doc_starts, b, t, x.device, type(self).__name__)
        q, k, v = self._qkv(x)
        res = linear_attention(
            q,
            k,
            v,
            self._log_decay(x),
            state["kv"],
            state.get("z"),
            normalize=self.normalize,
            chunk_size=self.chunk_size,
            resets=resets,
        )
        o, new_state = res.out, {"kv": res.state}
        if self.normalize:
            o = o / (res.den.unsqueeze(-1) + self.eps)
            new_state["z"] = res.z
        return self.out(o.transpose(1, 2).reshape(b, t, d)), new_state

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        if rows is not None:
            state = reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)
        x = x_t.unsqueeze(1)
        q, k, v = (z.squeeze(2) for z in self._qkv(x))  # (b, h, e)
        kv = state["kv"]
        log_decay = self._log_decay(x)
        alpha = None if log_decay is None else log_decay.squeeze(2).exp()[..., None]  # (b, h, 1)
        if alpha is not None:
            kv = alpha.unsqueeze(-1) * kv
        kv = kv + k.unsqueeze(-1) * v.unsqueeze(-2)
        o = (q.unsqueeze(-2) @ kv).squeeze(-2)  # (b, h, e)
        new_state = {"kv": kv}
        if self.normalize:
            z = state["z"] if alpha is None else alpha * state["z"]
            z = z + k
            o = o / ((q * z).sum(-1, keepdim=True) + self.eps)
            new_state["z"] = z
        return self.out(o.reshape(x_t.shape[0], self.dim)), new_state

    def flops_per_token(self, seq_len: int) -> float:
        d, h = self.dim, self.num_heads
        c = max(1, min(self.chunk_size, seq_len))
        # projections, scores and values within the chunk, the state's update and read, φ and scaling
        flops = 8.0 * d * d + 4.0 * c * d + 4.0 * d * self.head_dim + 4.0 * d
        if self.normalize:
            flops += 2.0 * c * h + 4.0 * d + d
        if self.decay == "input":
            flops += 2.0 * d * h
        if self.decay != "none":
            flops += 3.0 * c * h + 2.0 * d
        return flops

    def state_numel(self, seq_len: int) -> int:
        return self.dim * self.head_dim + (self.dim if self.normalize else 0)

    def param_count(self) -> int:
        return 4 * self.dim**2 + (self.dim * self.num_heads + self.num_heads if self.decay == "input" else 0)
