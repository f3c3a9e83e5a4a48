"""Gated DeltaNet-2 (GDN-2): KDA with its one β split into an erase gate on the keys and a write gate on the values.

# b batch · t time · d model · h heads · k key head dim · v value head dim · w conv width · r decay rank
# K = h·k, V = h·v (key and value widths over all heads)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import init_decay_
from pulse.blocks.mixers.kda import KimiDeltaAttention
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.documents import DocStarts
from pulse.ops.generalized_delta import generalized_delta, recurrent_generalized_delta


def gdn2_rule(q: Tensor, k: Tensor, v: Tensor, erase: Tensor, write: Tensor, log_alpha: Tensor,
              state: Tensor | None = None, resets: Tensor | None = None, *, chunk_size: int = 16
              ) -> tuple[Tensor, Tensor]:
    """GDN-2's rule S_t = (I − k_t (b_t ⊙ k_t)ᵀ) Diag(α_t) S_{t−1} + k_t (w_t ⊙ v_t)ᵀ, o_t = S_tᵀ q_t, chunkwise:
    q, k, the erase gate b, log α (b, h, t, k); v and the write gate w (b, h, t, v). It is the generalized delta
    rule (pulse.ops.generalized_delta, PULSE's a/b: b the read direction) with log w = log α, a = −k,
    b = b ⊙ k ⊙ α and the write k (w ⊙ v); fla's DPLR kernel on CUDA where installed and allowed."""
    return generalized_delta(q, k, write * v, -k, erase * k * log_alpha.exp(), log_alpha, state, resets,
                             chunk_size=chunk_size)


def gdn2_rule_reference(q: Tensor, k: Tensor, v: Tensor, erase: Tensor, write: Tensor, log_alpha: Tensor,
                        state: Tensor | None = None, resets: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`gdn2_rule` token by token (the generalized delta rule's per-token loop); same arguments and results."""
    return recurrent_generalized_delta(q, k, write * v, -k, erase * k * log_alpha.exp(), log_alpha, state, resets)


class GatedDeltaNet2(KimiDeltaAttention):
    """Gated DeltaNet-2 (NVIDIA 2026, arXiv 2605.22791; fla's `GatedDeltaNet2`), per head, state S ∈ ℝ^{k×v}:

        q, k, v = silu(conv_w(W_q x)), silu(conv_w(W_k x)), silu(conv_w(W_v x));  q, k ← q/‖q‖/√k, k/‖k‖
        b_t = σ(W_b x_t) ∈ (0, 1)^k,  w_t = σ(W_w x_t) ∈ (0, 1)^v,  α_t = exp(−e^{A_log} · softplus(W_↑ W_↓ x_t + b_Δ))
        S_t = (I − k_t (b_t ⊙ k_t)ᵀ) Diag(α_t) S_{t−1} + k_t (w_t ⊙ v_t)ᵀ,   o_t = S_tᵀ q_t
        y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    KDA's single strength β decides both how much of the old value under k_t is erased and how much of
    v_t is written; here they are two gates, one per key channel (b: which channels of the key address
    are erased) and one per value channel (w: which channels of the value are written), so a head can
    overwrite part of an association and keep the rest. With b = w = β (broadcast) it is KDA. In the
    generalized delta rule (`gdn2_rule`): w = α, a = −k, b = b ⊙ k ⊙ α, the write k (w ⊙ v); chunkwise
    (`chunk_size` tokens), `step` the recurrence. Projections, convs, decay and output are KDA's; the
    h columns of β in the fused input projection become K + V columns for b and w.

    State: conv inputs (w−1)·(2K + V) and S, h·k·v numbers, whatever the length.
    Cost per token: 2·d·(3K + 4V + r) + 2·r·K (projections) + 2·w·(2K + V) (conv)
    + c·(10·K + 4·V) (the chunk's pair sums, solve and reads) + 8·h·k·v (state read, transition, write)
    + 20·(2K + V); O(n·(d·(K + V) + c·(K + V) + h·k·v)) for n tokens.
    Params: d·(3K + 4V + r) + r·K + w·(2K + V) + v + h + K.
    """

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
                         chunk_size=chunk_size, decay_rank=decay_rank, eps=eps, device=device, dtype=dtype)
        K, V = self.key_width, self.value_width
        # q, k, v, the output gate, then the erase gate b (K) and the write gate w (V) in place of KDA's β (h)
        self.in_proj = nn.Linear(dim, 3 * K + 3 * V, bias=False, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear layers as torch initializes them, conv uniform in ±1/√w, the decay as KDA's (A ∈ [1, 16])."""
        for layer in (self.in_proj, self.out_proj, self.decay_down):
            layer.reset_parameters()
        with torch.no_grad():
            bound = 1 / math.sqrt(self.conv_size)
            self.conv_weight.uniform_(-bound, bound)
            self.norm_weight.fill_(1.0)
            nn.init.normal_(self.decay_up.weight, std=1 / math.sqrt(self.decay_rank) / 4)
        init_decay_(self.A_log, self.dt_bias, a_min=1.0)

    def _gdn2_inputs(self, x: Tensor, conv_state: Tensor, resets: Tensor | None) -> tuple[Tensor, ...]:
        """q, k, b, log α (b, h, t, k); v, w (b, h, t, v); the output gate (b, t, h, v); the conv state."""
        bsz, t, _ = x.shape
        h, K, V = self.num_heads, self.key_width, self.value_width
        qkv, gate, erase, write = self.in_proj(x).split((2 * K + V, V, K, V), dim=-1)
        qkv, conv_state = causal_depthwise_conv(qkv, self.conv_weight, None, conv_state, resets)
        q, k, v = F.silu(qkv).split((K, K, V), dim=-1)
        q = F.normalize(q.view(bsz, t, h, -1), dim=-1) / math.sqrt(self.head_dim)
        k = F.normalize(k.view(bsz, t, h, -1), dim=-1)
        pre = self.decay_up(self.decay_down(x)) + self.dt_bias  # (b, t, K)
        log_alpha = (-self.A_log.exp().repeat_interleave(self.head_dim) * F.softplus(pre)).view(bsz, t, h, -1)
        erase, write = torch.sigmoid(erase).view(bsz, t, h, -1), torch.sigmoid(write).view(bsz, t, h, -1)
        q, k, v, erase, write, log_alpha = (z.transpose(1, 2) for z in (q, k, v.view(bsz, t, h, -1), erase, write,
                                                                           log_alpha))
        return q, k, v, erase, write, log_alpha, gate.view(bsz, t, h, -1), conv_state

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        state, resets = self._open(x, state, doc_starts)
        q, k, v, erase, write, log_alpha, gate, conv_state = self._gdn2_inputs(x, state["conv"], resets)
        o, kv = gdn2_rule(q, k, v, erase, write, log_alpha, state["kv"], resets, chunk_size=self.chunk_size)
        return self._output(o, gate), {"conv": conv_state, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        state = self._open_step(x_t, state, doc_starts)
        q, k, v, erase, write, log_alpha, gate, conv_state = self._gdn2_inputs(x_t.unsqueeze(1), state["conv"], None)
        o, kv = gdn2_rule_reference(q, k, v, erase, write, log_alpha, state["kv"])  # one token: the recurrence
        return self._output(o, gate).squeeze(1), {"conv": conv_state, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, w, r = self.dim, self.num_heads, self.conv_size, self.decay_rank
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (3 * K + 4 * V + r) + 2.0 * r * K
        return proj + 2.0 * w * (2 * K + V) + c * (10 * K + 4 * V) + 8.0 * h * self.head_dim * self.head_v \
            + 20.0 * (2 * K + V)

    def param_count(self) -> int:
        d, h, w, K, V, r = self.dim, self.num_heads, self.conv_size, self.key_width, self.value_width, self.decay_rank
        return d * (3 * K + 4 * V + r) + r * K + w * (2 * K + V) + self.head_v + h + K
