"""Specs of the rest of the block zoo: linear attention, sparse state attention, SSM, Mamba-2, DeltaNet, NTM."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pulse.specs.base import Spec, divides


class LinearAttentionSpec(Spec):
    """Causal linear attention (kernel feature map, optional normaliser and per-head decay); state h·(d/h)² + d.

    S_t = α_t S_{t−1} + φ(k_t) v_tᵀ, y_t = W_o φ(q_t) S_t / φ(q_t)·z_t, computed chunkwise in parallel.
    Cost per token 8·d² + 4·c·d + 4·d·(d/h); params 4·d² (+ d·h + h with decay "input").
    """

    kind: Literal["linear_attention"] = "linear_attention"
    num_heads: int = Field(4, ge=1, description="heads; must divide the model dim (head dim = dim / num_heads)")
    feature_map: Literal["elu1", "relu", "identity"] = Field("elu1", description="φ applied to queries and keys")
    normalize: bool = Field(True, description="divide by φ(q)·Σφ(k) (needs a non-negative feature map)")
    decay: Literal["none", "fixed", "input"] = Field(
        "none",
        description="per-head forgetting: none, RetNet's fixed γ_h = 1 − 2^(−5−h), or input-dependent (GLA-style)",
    )
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the chunkwise-parallel form (speed only)")

    @model_validator(mode="after")
    def _check(self) -> "LinearAttentionSpec":
        if self.normalize and self.feature_map == "identity":
            raise ValueError(
                "normalize = true needs non-negative features, but feature_map = \"identity\" can make φ(q)·Σφ(k) "
                "zero or negative; set normalize = false or feature_map = \"elu1\" / \"relu\""
            )
        return self

    def check_dim(self, dim: int) -> None:
        divides("num_heads", self.num_heads, dim)


class SparseStateAttentionSpec(Spec):
    """Each token reads only its top-k slots of a chunk-wise, causally written slot bank.

    Scores over all s slots (O(n·s)), softmax over the kept k, read (O(n·k·d)); after each chunk the
    slots move toward the tokens that address them, gated. Params 5·d² + s·d + (conv_size + 2)·d.
    """

    kind: Literal["sparse_state_attention"] = "sparse_state_attention"
    num_slots: int = Field(64, ge=1, description="slots s in the bank")
    top_k: int = Field(8, ge=1, description="slots each token reads (k ≤ num_slots)")
    num_heads: int = Field(4, ge=1, description="heads, each with its own top-k; must divide the model dim")
    chunk_size: int = Field(64, ge=1, description="tokens written into the slots at once; 1 = per-token recurrence")
    conv_size: int = Field(4, ge=2, description="width of the causal depthwise conv (the path inside a chunk)")

    @model_validator(mode="after")
    def _check(self) -> "SparseStateAttentionSpec":
        if self.top_k > self.num_slots:
            raise ValueError(
                f"top_k ({self.top_k}) is larger than num_slots ({self.num_slots}); a token cannot read more slots "
                f"than the bank holds — lower top_k to at most {self.num_slots} or raise num_slots"
            )
        return self

    def check_dim(self, dim: int) -> None:
        divides("num_heads", self.num_heads, dim)


class SSMSpec(Spec):
    """Selective state-space block (Mamba S6): conv, input-dependent Δ/B/C, diagonal A, SiLU gate.

    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t x_t B_tᵀ, y_t = h_t C_t + D x_t, by a chunked scan. With e = expand·d:
    state e·(d_state + conv_size − 1); params 3·d·e + e·(conv_size + 2·dt_rank + 3·d_state + 3).
    """

    kind: Literal["ssm"] = "ssm"
    d_state: int = Field(16, ge=1, description="state size n per channel")
    expand: int = Field(2, ge=1, description="inner width as a multiple of the model dim")
    conv_size: int = Field(4, ge=2, description="width of the causal depthwise conv")
    dt_rank: int | None = Field(None, ge=1, description="rank of the Δ projection; default ceil(dim / 16)")
    dt_min: float = Field(1e-3, gt=0, description="smallest initial step Δ")
    dt_max: float = Field(0.1, gt=0, description="largest initial step Δ")
    chunk_size: int = Field(16, ge=1, description="tokens per chunk of the chunked scan (speed only)")

    @model_validator(mode="after")
    def _check(self) -> "SSMSpec":
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) exceeds dt_max ({self.dt_max}); swap them or make them equal")
        return self


class NTMSpec(Spec):
    """Neural Turing Machine memory: GRU controller, content + location addressed read/write heads.

    Per-sequence memory (memory_slots × memory_width) written with erase/add and read each token;
    addressing by cosine similarity, interpolation, circular shift and sharpening. Sequential by nature.
    """

    kind: Literal["ntm"] = "ntm"
    memory_slots: int = Field(32, ge=2, description="memory rows N")
    memory_width: int = Field(32, ge=1, description="width M of each memory row")
    read_heads: int = Field(1, ge=1, description="read heads")
    write_heads: int = Field(1, ge=1, description="write heads")
    controller_size: int | None = Field(None, ge=1, description="GRU controller width; default the model dim")
    memory_init: Literal["learned", "fixed"] = Field(
        "learned", description="initial memory of every sequence: a learned matrix or a small constant"
    )


def check_value_width(head_dim: int, expand_v: float) -> None:
    """head_dim · expand_v must be a whole value width per head (the delta-rule family, mLSTM)."""
    head_v = head_dim * expand_v
    if head_v != int(head_v):
        raise ValueError(
            f"head_dim · expand_v = {head_dim} · {expand_v} = {head_v} is not a whole value width; "
            f"pick expand_v so that it is (e.g. {max(1, round(head_v)) / head_dim:g})"
        )


class _DeltaRuleSpec(Spec):
    """Fields shared by `gated_deltanet` and `deltanet` (key width K = h·k, value width V = h·k·expand_v)."""

    num_heads: int = Field(4, ge=1, description="heads h, each with its own k × v fast-weight state")
    head_dim: int = Field(32, ge=1, description="key (and query) width k per head; independent of the model dim")
    expand_v: float = Field(
        2.0, gt=0, description="value width per head as a multiple of head_dim (v = head_dim · expand_v, whole)"
    )
    conv_size: int = Field(4, ge=2, description="width of the short causal depthwise conv on q, k and v")
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the chunkwise (WY/UT) form (speed only)")

    @model_validator(mode="after")
    def _check(self) -> "_DeltaRuleSpec":
        check_value_width(self.head_dim, self.expand_v)
        return self


class GatedDeltaNetSpec(_DeltaRuleSpec):
    """Gated DeltaNet: per-head fast weights written by the delta rule with decay α_t and strength β_t.

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t, L2-normalised q/k after a short
    causal conv; output rmsnorm ⊙ silu gate. Chunkwise WY/UT form. State h·k·v + (w−1)·(2K + V);
    params d·(2K + 3V + 2h) + w·(2K + V) + v + 2h.
    """

    kind: Literal["gated_deltanet"] = "gated_deltanet"


class DeltaNetSpec(_DeltaRuleSpec):
    """DeltaNet: the ungated delta rule (α_t = 1), otherwise as gated_deltanet.

    S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t. State h·k·v + (w−1)·(2K + V);
    params d·(2K + 3V + h) + w·(2K + V) + v.
    """

    kind: Literal["deltanet"] = "deltanet"


class KDASpec(_DeltaRuleSpec):
    """Kimi Delta Attention: the gated delta rule with a decay per key channel (a low-rank map of x).

    S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ, α_t ∈ (0, 1]^k; otherwise as gated_deltanet.
    Chunkwise generalized delta rule. State h·k·v + (w−1)·(2K + V); params d·(2K + 3V + h + r) + r·K
    + w·(2K + V) + v + h + K.
    """

    kind: Literal["kda"] = "kda"
    chunk_size: int = Field(16, ge=1, description="tokens per chunk of the chunkwise form (speed and memory only)")
    decay_rank: int | None = Field(None, ge=1, description="rank r of the map from x to the per-channel decay "
                                                           "(default: head_dim)")


class GatedDeltaProductSpec(_DeltaRuleSpec):
    """Gated DeltaProduct: m delta-rule (Householder) steps per token, each with its own k, v and β.

    S_t = Π_j (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) α_t S_{t−1} + writes; m = 1 is gated_deltanet. State h·k·v
    + (w−1)·(K + m·(K + V)); params d·(K + m·(K + V) + V + (m + 1)·h) + V·d + w·(K + m·(K + V)) + v + 2h.
    """

    kind: Literal["gated_deltaproduct"] = "gated_deltaproduct"
    num_householder: int = Field(2, ge=1, description="delta-rule steps m per token (chunk_size counts these)")


class RWKV7Spec(Spec):
    """RWKV-7 time mixing: per head an e × e state with a per-channel decay and a rank-one removal
    along a normalised key, scaled by a per-channel in-context learning rate; token shift, low-rank
    maps for decay, learning rate and gate. S_t = (Diag(w_t) − (κ ⊙ a) κᵀ) S_{t−1} + k vᵀ (κ the normalised
    removal key). State d·e + d
    (e = d/h); params 4·d² + 2·d·(r_w + r_a + r_g) + 13·d.
    """

    kind: Literal["rwkv7"] = "rwkv7"
    num_heads: int = Field(4, ge=1, description="heads h; each holds a (d/h) × (d/h) state")
    decay_rank: int = Field(32, ge=1, description="rank r_w of the map from x to the per-channel decay")
    iclr_rank: int = Field(32, ge=1, description="rank r_a of the map from x to the in-context learning rate")
    gate_rank: int = Field(64, ge=1, description="rank r_g of the output gate")
    chunk_size: int = Field(32, ge=1, description="tokens per chunk of the chunkwise form (speed and memory only)")


class Mamba2Spec(Spec):
    """Mamba-2 (SSD): selective SSM with one scalar decay per head, chunked matmul form.

    S_t = exp(Δ_t A_h) S_{t−1} + B_t (Δ_t x_t)ᵀ, y_t = S_tᵀ C_t + D_h x_t, gated rmsnorm, B/C shared by heads.
    With e = expand·d: state e·s + (w−1)·(e + 2s); params d·(2e + 2s + h) + e·d + (w + 1)·(e + 2s) + 3h + e.
    """

    kind: Literal["mamba2"] = "mamba2"
    num_heads: int = Field(4, ge=1, description="heads h, each with one decay; must divide expand · dim")
    d_state: int = Field(64, ge=1, description="state size s per head channel (shared B, C width)")
    expand: int = Field(2, ge=1, description="inner width e as a multiple of the model dim")
    conv_size: int = Field(4, ge=2, description="width of the causal depthwise conv on x, B and C")
    dt_min: float = Field(1e-3, gt=0, description="smallest initial step Δ")
    dt_max: float = Field(0.1, gt=0, description="largest initial step Δ")
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the SSD matmul form (speed only)")

    @model_validator(mode="after")
    def _check(self) -> "Mamba2Spec":
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) exceeds dt_max ({self.dt_max}); swap them or make them equal")
        return self

    def check_dim(self, dim: int) -> None:
        divides("num_heads", self.num_heads, self.expand * dim, f"expand · dim = {self.expand} · {dim}")
