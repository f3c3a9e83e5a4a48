"""Specs of the rest of the block zoo: linear attention, sparse state attention, SSM, NTM memory."""

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
        "none", description="per-head forgetting: none, RetNet's fixed γ_h = 1 − 2^(−5−h), or input-dependent (GLA-style)"
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
