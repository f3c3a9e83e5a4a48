"""Specs of the 2026 frontier mixers (issue #39): each the fields of one registered `mixer` kind.

The blocks are in pulse/blocks/mixers/, registered in pulse/assemble/mixers.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pulse.specs.base import Spec, divides
from pulse.specs.mixers import _DeltaRuleSpec, check_value_width


class GatedDeltaNet2Spec(_DeltaRuleSpec):
    """Gated DeltaNet-2: KDA with β split into a channel-wise erase gate b (keys) and write gate w (values).

    S_t = (I − k_t (b_t ⊙ k_t)ᵀ) Diag(α_t) S_{t−1} + k_t (w_t ⊙ v_t)ᵀ, α_t ∈ (0, 1]^k; b = w = β is KDA. Chunkwise
    generalized delta rule. State h·k·v + (w−1)·(2K + V); params d·(3K + 4V + r) + r·K + w·(2K + V) + v + h + K.
    """

    kind: Literal["gated_deltanet2"] = "gated_deltanet2"
    chunk_size: int = Field(16, ge=1, description="tokens per chunk of the chunkwise form (speed and memory only)")
    decay_rank: int | None = Field(None, ge=1, description="rank r of the map from x to the per-channel decay "
                                                           "(default: head_dim)")


class ForgettingAttentionSpec(Spec):
    """Forgetting attention (FoX): causal softmax attention whose logits carry a data-dependent forget gate.

    o_i = Σ_{j≤i} exp(q_i·k_j/√e + Σ_{l=j+1..i} log f_l) v_j / Σ …, f_t = σ(w_fᵀ x_t + b_f) per head; f ≡ 1
    is attention. State: a KV cache with each key's log-decay, n·(2·d + h) after n tokens (grows with n);
    params 4·d² + d·h + h (+ 4·d with bias, + d² with output_gate, + 2·d with qk_norm).
    """

    kind: Literal["forgetting_attention"] = "forgetting_attention"
    num_heads: int = Field(4, ge=1, description="attention heads, each with its own forget gate; must divide dim")
    bias: bool = Field(False, description="bias in the q/k/v and output projections")
    qk_norm: bool = Field(False, description="FoX Pro: RMSNorm of q and k per head, a learned scale per channel")
    output_gate: bool = Field(False, description="FoX Pro: o ⊙ σ(W_g x) before the output projection")

    def check_dim(self, dim: int) -> None:
        divides("num_heads", self.num_heads, dim)


class RGLRUSpec(Spec):
    """Griffin/Hawk's recurrent block (RecurrentGemma): conv, the RG-LRU, and a GeLU-gated branch.

    h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ u_t), a_t = exp(−8 · r_t ⊙ softplus(λ)), i, r block-diagonal
    sigmoid gates of the conv output u; y = W_o (h ⊙ gelu(W_y x)). With l = lru_width, e = l/h: state w·l + 1;
    params 3·d·l + 2·l·e + (w + 6)·l + d.
    """

    kind: Literal["rglru"] = "rglru"
    num_heads: int = Field(4, ge=1, description="gate blocks h (RecurrentGemma's num_attention_heads); must divide "
                                                "lru_width")
    lru_width: int | None = Field(None, ge=1, description="width l of the recurrence (default: dim)")
    conv_size: int = Field(4, ge=2, description="width of the causal depthwise conv before the RG-LRU")

    def check_dim(self, dim: int) -> None:
        width = self.lru_width or dim
        divides("num_heads", self.num_heads, width, "lru_width" if self.lru_width else "dim")


class MLSTMSpec(Spec):
    """xLSTM's mLSTM layer (as xLSTM-7B): a matrix memory with exponential input and sigmoid forget gates,
    a normaliser and a max stabiliser; sigmoid output gate, per-head layernorm.

    C_t = f_t C_{t−1} + i_t k_t v_tᵀ, n_t = f_t n_{t−1} + i_t k_t, h_t = C_tᵀq_t / max(|n_tᵀq_t|, 1) (stabilised);
    chunkwise. State h·(k·(v + 1) + 1); params d·(2K + 3V + 2h) + 2h + V (K = h·k, V = h·v).
    """

    kind: Literal["mlstm"] = "mlstm"
    num_heads: int = Field(4, ge=1, description="heads h, each with its own k × v matrix memory and gates")
    head_dim: int = Field(32, ge=1, description="query/key width k per head; independent of the model dim")
    expand_v: float = Field(
        2.0, gt=0, description="value width per head as a multiple of head_dim (v = head_dim · expand_v, whole)"
    )
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the chunkwise form (speed and memory only)")
    gate_soft_cap: float | None = Field(15.0, gt=0, description="cap·tanh(·/cap) on the gate pre-activations "
                                                                 "(none: no cap)")
    eps: float = Field(1e-6, gt=0, description="ε added to the normaliser's denominator max(|nᵀq|, e^{−m})")
    norm_eps: float = Field(1e-6, gt=0, description="ε of the per-head layernorm of the memory's read")

    @model_validator(mode="after")
    def _check(self) -> "MLSTMSpec":
        check_value_width(self.head_dim, self.expand_v)
        return self
