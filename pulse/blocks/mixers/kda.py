"""Kimi Delta Attention (KDA): the gated delta rule with a decay per key channel.

# b batch · t time · d model · h heads · k key head dim · v value head dim · w conv width · r decay rank
# K = h·k, V = h·v (key and value widths over all heads)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import init_decay_
from pulse.blocks.mixers.deltanet import GatedDeltaNet
from pulse.contract import no_weight_decay
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts
from pulse.ops.generalized_delta import kda_rule, recurrent_generalized_delta


class KimiDeltaAttention(GatedDeltaNet):
    """KDA (Kimi Linear, Moonshot AI 2025), per head, state S ∈ ℝ^{k×v}:

        q, k, v = silu(conv_w(W_q x)), silu(conv_w(W_k x)), silu(conv_w(W_v x));  q, k ← q/‖q‖/√k, k/‖k‖
        β_t = σ(w_β·x_t),  α_t = exp(−e^{A_log} · softplus(W_↑ W_↓ x_t + b_Δ)) ∈ (0, 1]^k   (per channel)
        S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t
        y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    Gated DeltaNet's error-correcting write with the decay made per key channel (a low-rank map
    W_↑ W_↓ of rank r, one A per head): each channel of the memory forgets at its own rate, so one
    head keeps fast- and slow-changing associations side by side. In the generalized delta rule
    (`pulse.ops.generalized_delta.kda_rule`; fla's `chunk_kda` on CUDA where installed): w = α,
    a = −β k, b = k ⊙ α, write β k; computed chunkwise
    (`chunk_size` tokens, 16 by default: a chunk whose decay passes e^{−40} is summed pairwise, so
    short chunks keep most in the factored form),
    `step` is the recurrence.

    State: conv inputs (w−1)·(2K + V) and S, h·k·v numbers, whatever the length.
    Cost per token: 2·d·(2K + 3V + h + r) + 2·r·K (projections) + 2·w·(2K + V) (conv)
    + c·(10·K + 4·V) (the chunk's pair sums, solve and reads) + 8·h·k·v (state read, transition, write)
    + 16·(2K + V); O(n·(d·(K + V) + c·(K + V) + h·k·v)) for n tokens.
    Params: d·(2K + 3V + h + r) + r·K + w·(2K + V) + v + h + K.
    """

    gated: ClassVar[bool] = False  # the decay is this class's own (per channel), not Gated DeltaNet's per head

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        head_dim: int = 32,
        expand_v: float = 2.0,
        conv_size: int = 4,
        chunk_size: int = 16,
        decay_rank: int | None = None,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, num_heads=num_heads, head_dim=head_dim, expand_v=expand_v, conv_size=conv_size,
                         chunk_size=chunk_size, eps=eps, device=device, dtype=dtype)
        rank = decay_rank or head_dim
        if rank < 1:
            raise PulseError(f"decay_rank must be ≥ 1, got {rank}.")
        factory = {"device": device, "dtype": dtype}
        self.decay_rank = rank
        self.decay_down = nn.Linear(dim, rank, bias=False, **factory)
        self.decay_up = nn.Linear(rank, self.key_width, bias=False, **factory)
        self.A_log = no_weight_decay(nn.Parameter(torch.empty(num_heads, **factory)))
        self.dt_bias = no_weight_decay(nn.Parameter(torch.empty(self.key_width, **factory)))
        with torch.no_grad():
            nn.init.normal_(self.decay_up.weight, std=1 / math.sqrt(rank) / 4)
        init_decay_(self.A_log, self.dt_bias, a_min=1.0)

    def _kda_inputs(self, x: Tensor, conv_state: Tensor, resets: Tensor | None) -> tuple[Tensor, ...]:
        """q, k, v (b, h, t, ·), β (b, h, t), log α (b, h, t, k), the gate (b, t, h, v) and the conv state."""
        q, k, v, beta, _, gate, conv_state = self._inputs(x, conv_state, resets)
        b, t = x.shape[0], x.shape[1]
        h, e = self.num_heads, self.head_dim
        pre = self.decay_up(self.decay_down(x)) + self.dt_bias  # (b, t, K)
        log_alpha = -self.A_log.exp().repeat_interleave(e) * F.softplus(pre)
        log_alpha = log_alpha.view(b, t, h, e).transpose(1, 2)  # (b, h, t, k), ≤ 0
        return q, k, v, beta, log_alpha, gate, conv_state

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        state, resets = self._open(x, state, doc_starts)
        q, k, v, beta, log_alpha, gate, conv_state = self._kda_inputs(x, state["conv"], resets)
        o, kv = kda_rule(q, k, v, beta, log_alpha, state["kv"], resets, chunk_size=self.chunk_size)
        return self._output(o, gate), {"conv": conv_state, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        state = self._open_step(x_t, state, doc_starts)
        q, k, v, beta, log_alpha, gate, conv_state = self._kda_inputs(x_t.unsqueeze(1), state["conv"], None)
        bk = beta.unsqueeze(-1) * k  # one token: the recurrence, w = α, a = −β k, b = k ⊙ α, write β k
        o, kv = recurrent_generalized_delta(q, bk, v, -bk, k * log_alpha.exp(), log_alpha, state["kv"])
        return self._output(o, gate).squeeze(1), {"conv": conv_state, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, w, r = self.dim, self.num_heads, self.conv_size, self.decay_rank
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (2 * K + 3 * V + h + r) + 2.0 * r * K
        return proj + 2.0 * w * (2 * K + V) + c * (10 * K + 4 * V) + 8.0 * h * self.head_dim * self.head_v \
            + 16.0 * (2 * K + V)

    def param_count(self) -> int:
        d, h, w, K, V, r = self.dim, self.num_heads, self.conv_size, self.key_width, self.value_width, self.decay_rank
        return d * (2 * K + 3 * V + h + r) + r * K + w * (2 * K + V) + self.head_v + h + K
