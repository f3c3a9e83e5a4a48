"""Gated DeltaProduct: several delta-rule (Householder) steps per token.

# b batch · t time · d model · h heads · k key head dim · v value head dim · w conv width
# m Householder steps per token · K = h·k, V = h·v
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.deltanet import GatedDeltaNet
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.delta_rule import delta_rule, recurrent_delta_rule
from pulse.ops.documents import DocStarts


class GatedDeltaProduct(GatedDeltaNet):
    """Gated DeltaProduct (Siems et al. 2025), per head, state S ∈ ℝ^{k×v}, m steps per token:

        q = silu(conv_w(W_q x)) normalised / √k;  for j = 1..m: k_{t,j}, v_{t,j}, β_{t,j} as Gated DeltaNet's
        S_{t,0} = α_t S_{t−1},   S_{t,j} = (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t,j−1} + β_{t,j} k_{t,j} v_{t,j}ᵀ
        S_t = S_{t,m},   o_t = S_tᵀ q_t,   y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    The state transition of a token is a product of m generalized Householder matrices (times the
    decay): m = 1 is Gated DeltaNet; with more steps a token can rotate and rewrite several
    directions of the memory at once (state tracking that one rank-one step per token cannot
    express). Computed as the delta rule over m micro-steps per token (`pulse.ops.delta_rule`, the
    decay on each token's first micro-step, outputs read at its last; `chunk_size` counts
    micro-steps), `step` as m steps of the recurrence.

    State: conv inputs (w−1)·(K + m·(K + V)) and S, h·k·v numbers, whatever the length.
    Cost per token: 2·d·(K + m·(K + V) + V + (m + 1)·h) + 2·V·d (projections) + 2·w·(K + m·(K + V))
    (conv) + m·[c·(5K + 3V) + 6·h·k·v] (the micro-steps) + 12·(K + m·(K + V)).
    Params: d·(K + m·(K + V) + V + (m + 1)·h) + V·d + w·(K + m·(K + V)) + v + 2h.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        head_dim: int = 32,
        expand_v: float = 2.0,
        num_householder: int = 2,
        conv_size: int = 4,
        chunk_size: int = 64,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        if num_householder < 1:
            raise PulseError(f"num_householder must be ≥ 1, got {num_householder}.")
        super().__init__(dim, num_heads=num_heads, head_dim=head_dim, expand_v=expand_v, conv_size=conv_size,
                         chunk_size=chunk_size, eps=eps, device=device, dtype=dtype)
        factory = {"device": device, "dtype": dtype}
        m, h, K, V = num_householder, num_heads, self.key_width, self.value_width
        self.num_householder = m
        # q, m keys, m values, the output gate, m βs and the decay's input
        self.in_proj = nn.Linear(dim, K + m * (K + V) + V + (m + 1) * h, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(K + m * (K + V), conv_size, **factory))
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)

    def _micro(self, x: Tensor, conv_state: Tensor, resets: Tensor | None) -> tuple[Tensor, ...]:
        """The m micro-steps of every token laid out in time (b, h, t·m, ·): q (zero but at each token's last
        micro-step), k, v, β, log α (on each token's first), the resets likewise; the gate and conv state."""
        b, t, _ = x.shape
        m, h, e, ev = self.num_householder, self.num_heads, self.head_dim, self.head_v
        K, V = self.key_width, self.value_width
        conv_in, gate, beta, pre = self.in_proj(x).split((K + m * (K + V), V, m * h, h), dim=-1)
        conv_in, conv_state = causal_depthwise_conv(conv_in, self.conv_weight, None, conv_state, resets)
        q, k, v = F.silu(conv_in).split((K, m * K, m * V), dim=-1)
        q = F.normalize(q.view(b, t, h, e), dim=-1) / math.sqrt(e)
        k = F.normalize(k.view(b, t, m, h, e), dim=-1)
        v = v.view(b, t, m, h, ev)
        beta = torch.sigmoid(beta).view(b, t, m, h)
        log_decay = -self.A_log.exp() * F.softplus(pre + self.dt_bias)  # (b, t, h), ≤ 0
        first = F.pad(log_decay.unsqueeze(2), (0, 0, 0, m - 1))  # (b, t, m, h): the decay on micro-step 0
        q_m = F.pad(q.unsqueeze(2), (0, 0, 0, 0, m - 1, 0))  # (b, t, m, h, e): q on the last micro-step
        def lay(z: Tensor) -> Tensor:  # (b, t, m, h[, ·]) → (b, h, t·m[, ·]), token-major
            return (z.permute(0, 3, 1, 2) if z.ndim == 4 else z.permute(0, 3, 1, 2, 4)).flatten(2, 3)

        resets_m = None if resets is None else F.pad(resets.unsqueeze(2), (0, m - 1)).flatten(1, 2)
        return lay(q_m), lay(k), lay(v), lay(beta), lay(first), resets_m, gate.view(b, t, h, -1), conv_state

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        state, resets = self._open(x, state, doc_starts)
        q, k, v, beta, log_decay, resets_m, gate, conv_state = self._micro(x, state["conv"], resets)
        o, kv = delta_rule(q, k, v, beta, log_decay, state["kv"], resets_m, chunk_size=self.chunk_size)
        m = self.num_householder
        return self._output(o[:, :, m - 1 :: m], gate), {"conv": conv_state, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        state = self._open_step(x_t, state, doc_starts)
        q, k, v, beta, log_decay, _, gate, conv_state = self._micro(x_t.unsqueeze(1), state["conv"], None)
        o, kv = recurrent_delta_rule(q, k, v, beta, log_decay, state["kv"])  # m micro-steps of the recurrence
        return self._output(o[:, :, -1:], gate).squeeze(1), {"conv": conv_state, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, w, m = self.dim, self.num_heads, self.conv_size, self.num_householder
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len * m))
        proj = 2.0 * d * (K + m * (K + V) + V + (m + 1) * h) + 2.0 * V * d
        micro = m * (c * (5 * K + 3 * V) + 6.0 * h * self.head_dim * self.head_v)
        return proj + 2.0 * w * (K + m * (K + V)) + micro + 12.0 * (K + m * (K + V))

    def state_numel(self, seq_len: int) -> int:
        conv = (self.conv_size - 1) * self.conv_weight.shape[0]
        return conv + self.num_heads * self.head_dim * self.head_v

    def param_count(self) -> int:
        d, h, w, m, K, V = self.dim, self.num_heads, self.conv_size, self.num_householder, self.key_width, \
            self.value_width
        return d * (K + m * (K + V) + V + (m + 1) * h) + V * d + w * (K + m * (K + V)) + self.head_v + 2 * h
