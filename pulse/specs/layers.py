"""Specs of the first blocks: attention, MLPs, norms, positions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pulse.specs.base import Spec, divides


class AttentionSpec(Spec):
    """Causal multi-head softmax attention (SDPA); its state is a KV cache."""

    kind: Literal["attention"] = "attention"
    num_heads: int = Field(4, ge=1, description="attention heads; must divide the model dim")
    bias: bool = Field(False, description="bias in the q/k/v and output projections")

    def check_dim(self, dim: int) -> None:
        divides("num_heads", self.num_heads, dim)


class GeluMlpSpec(Spec):
    """Two-layer MLP with GELU: W2 gelu(W1 x)."""

    kind: Literal["gelu"] = "gelu"
    hidden_mult: float = Field(4.0, gt=0, description="hidden width as a multiple of dim (rounded up to 8)")
    bias: bool = Field(True, description="biases in both linear layers")


class SwiGluMlpSpec(Spec):
    """Gated MLP: W2 (silu(W1 x) * W3 x)."""

    kind: Literal["swiglu"] = "swiglu"
    hidden_mult: float = Field(8 / 3, gt=0, description="hidden width as a multiple of dim (rounded up to 8)")


class LayerNormSpec(Spec):
    """LayerNorm with learned scale and bias."""

    kind: Literal["layernorm"] = "layernorm"
    eps: float = Field(1e-5, gt=0, description="added to the variance for numerical safety")


class RMSNormSpec(Spec):
    """RMSNorm with learned scale."""

    kind: Literal["rmsnorm"] = "rmsnorm"
    eps: float = Field(1e-6, gt=0, description="added to the mean square for numerical safety")


class LearnedPositionsSpec(Spec):
    """Learned absolute position embeddings added to the token embeddings."""

    kind: Literal["learned"] = "learned"
    max_seq_len: int = Field(2048, ge=1, description="longest sequence (prompt + generation) the model accepts")


class RotarySpec(Spec):
    """Rotary position embedding applied to queries and keys of attention mixers."""

    kind: Literal["rotary"] = "rotary"
    base: float = Field(10000.0, gt=1, description="frequency base θ")
