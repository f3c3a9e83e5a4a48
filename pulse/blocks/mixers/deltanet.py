"""Gated DeltaNet and DeltaNet: a per-head fast-weight memory written by the delta rule.

# b batch · t time · d model · h heads · k key head dim · v value head dim · w conv width
# K = h·k, V = h·v (key and value widths over all heads)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import decay_parameters, init_decay_
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.delta_rule import delta_rule, recurrent_delta_rule
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask


class GatedDeltaNet(nn.Module):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024), per head, state S ∈ ℝ^{k×v}:

        q, k, v = silu(conv_w(W_q x)), silu(conv_w(W_k x)), silu(conv_w(W_v x));  q, k ← q/‖q‖/√k, k/‖k‖
        β_t = σ(w_β·x_t),  α_t = exp(−e^{A_log} · softplus(w_α·x_t + b_Δ))
        S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t
        y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))              (norm per head, weight shared by heads)

    Each write moves the value stored under k_t a fraction β_t toward v_t (an error-correcting,
    key-addressed write), after the whole memory decays by α_t; `DeltaNet` is the same block with
    α_t = 1. Computed chunkwise (`chunk_delta_rule`, the WY/UT form); `step` is the recurrence.

    State: conv inputs (w−1)·(2K + V) and S, h·k·v numbers, whatever the length.
    Cost per token: 2·d·(2K + 3V + 2h) (projections) + 2·w·(2K + V) (conv) + c·(5K + 3V) (the chunk:
    scores, A, triangular solve, in-chunk read) + 6·h·k·v (state read, correction, write) + 12·(2K + V),
    O(n·(d·(K + V) + c·(K + V) + h·k·v)) for n tokens.
    Params: d·(2K + 3V + 2h) + w·(2K + V) + v + 2h (DeltaNet: d·(2K + 3V + h) + w·(2K + V) + v).
    """

    gated: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        head_dim: int = 32,
        expand_v: float = 2.0,
        conv_size: int = 4,
        chunk_size: int = 64,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        head_v = head_dim * expand_v
        if conv_size < 2 or chunk_size < 1 or head_v != int(head_v) or head_v < 1:
            raise PulseError(
                f"{type(self).__name__} needs conv_size ≥ 2, chunk_size ≥ 1 and head_dim · expand_v a whole number "
                f"≥ 1; got conv_size={conv_size}, chunk_size={chunk_size}, head_dim · expand_v={head_v}."
            )
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim, self.head_v = dim, num_heads, head_dim, int(head_v)
        self.conv_size, self.chunk_size, self.eps = conv_size, chunk_size, eps
        h, K, V = num_heads, num_heads * head_dim, num_heads * self.head_v
        self.key_width, self.value_width = K, V
        # one projection for q, k, v, the output gate, β and (gated) the decay's input
        self.in_proj = nn.Linear(dim, 2 * K + 2 * V + (2 if self.gated else 1) * h, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(2 * K + V, conv_size, **factory))
        self.norm_weight = nn.Parameter(torch.ones(self.head_v, **factory))
        self.out_proj = nn.Linear(V, dim, bias=False, **factory)
        if self.gated:
            self.A_log, self.dt_bias = decay_parameters(h, **factory)
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)
        if self.gated:
            init_decay_(self.A_log, self.dt_bias, a_min=1e-4)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.conv_weight.device
        dtype = dtype if dtype is not None else self.conv_weight.dtype
        return {
            "conv": torch.zeros(batch, self.conv_size - 1, self.conv_weight.shape[0], device=device, dtype=dtype),
            "kv": torch.zeros(batch, self.num_heads, self.head_dim, self.head_v, device=device, dtype=dtype),
        }

    def _check_state(self, state: object, batch: int) -> None:
        conv = state.get("conv") if isinstance(state, dict) else None
        kv = state.get("kv") if isinstance(state, dict) else None
        if (
            not isinstance(conv, Tensor) or not isinstance(kv, Tensor)
            or tuple(kv.shape) != (batch, self.num_heads, self.head_dim, self.head_v)
            or tuple(conv.shape) != (batch, self.conv_size - 1, self.conv_weight.shape[0])
        ):
            raise PulseError(
                f"{type(self).__name__} got a state that does not fit a batch of {batch}; pass the state its "
                "forward or init_state returned."
            )

    def _open(self, x: Tensor, state: dict[str, Tensor] | None, doc_starts: DocStarts
              ) -> tuple[dict[str, Tensor], Tensor | None]:
        """What every forward of this family starts with: the input checked, the state made or checked, the
        document starts as a (b, t) mask (or None)."""
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        self._check_state(state, x.shape[0])
        return state, starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)

    def _open_step(self, x_t: Tensor, state: dict[str, Tensor], doc_starts: Tensor | None) -> dict[str, Tensor]:
        """What every step of this family starts with: checks, and the rows a document starts in reset."""
        check_input(self, x_t, ndim=2)
        self._check_state(state, x_t.shape[0])
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        if rows is None:
            return state
        return reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)

    def _inputs(self, x: Tensor, conv_state: Tensor, resets: Tensor | None = None) -> tuple[Tensor, ...]:
        """q, k (b, h, t, k), v (b, h, t, v), β and log α (b, h, t) or None, gate (b, t, h, v), conv state."""
        b, t, _ = x.shape
        h, K, V = self.num_heads, self.key_width, self.value_width
        qkv, gate, rest = self.in_proj(x).split((2 * K + V, V, self.in_proj.out_features - 2 * K - 2 * V), dim=-1)
        qkv, conv_state = causal_depthwise_conv(qkv, self.conv_weight, None, conv_state, resets)
        q, k, v = F.silu(qkv).split((K, K, V), dim=-1)
        q = F.normalize(q.view(b, t, h, -1), dim=-1) / math.sqrt(self.head_dim)
        k = F.normalize(k.view(b, t, h, -1), dim=-1)
        v = v.view(b, t, h, -1)
        beta = torch.sigmoid(rest[..., :h])
        log_decay = None
        if self.gated:
            log_decay = -self.A_log.exp() * F.softplus(rest[..., h:] + self.dt_bias)  # (b, t, h), ≤ 0
            log_decay = log_decay.transpose(1, 2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        return q, k, v, beta.transpose(1, 2), log_decay, gate.view(b, t, h, -1), conv_state

    def _output(self, o: Tensor, gate: Tensor) -> Tensor:
        """o: (b, h, t, v), gate: (b, t, h, v) → (b, t, d)."""
        o = F.rms_norm(o.transpose(1, 2), (self.head_v,), self.norm_weight, self.eps) * F.silu(gate)
        return self.out_proj(o.flatten(2))

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        state, resets = self._open(x, state, doc_starts)
        q, k, v, beta, log_decay, gate, conv_state = self._inputs(x, state["conv"], resets)
        o, kv = delta_rule(q, k, v, beta, log_decay, state["kv"], resets, chunk_size=self.chunk_size)
        return self._output(o, gate), {"conv": conv_state, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        state = self._open_step(x_t, state, doc_starts)
        q, k, v, beta, log_decay, gate, conv_state = self._inputs(x_t.unsqueeze(1), state["conv"])
        o, kv = recurrent_delta_rule(q, k, v, beta, log_decay, state["kv"])  # one token: the recurrence
        return self._output(o, gate).squeeze(1), {"conv": conv_state, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, w = self.dim, self.num_heads, self.conv_size
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (2 * K + 3 * V + (2 if self.gated else 1) * h)
        state = 6.0 * h * self.head_dim * self.head_v
        return proj + 2.0 * w * (2 * K + V) + c * (5 * K + 3 * V) + state + 12.0 * (2 * K + V)

    def state_numel(self, seq_len: int) -> int:
        conv = (self.conv_size - 1) * (2 * self.key_width + self.value_width)
        return conv + self.num_heads * self.head_dim * self.head_v

    def param_count(self) -> int:
        d, h, w, K, V = self.dim, self.num_heads, self.conv_size, self.key_width, self.value_width
        if self.gated:
            return d * (2 * K + 3 * V + 2 * h) + w * (2 * K + V) + self.head_v + 2 * h
        return d * (2 * K + 3 * V + h) + w * (2 * K + V) + self.head_v


class DeltaNet(GatedDeltaNet):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024): `GatedDeltaNet` without the decay, α_t = 1.

        S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t
        y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    Same convs, normalised q/k, output gate and norm, same chunkwise form and costs (less 2·d·h FLOPs).
    Params: d·(2K + 3V + h) + w·(2K + V) + v.
    """

    gated: ClassVar[bool] = False
