"""Registrations of the generic layers: kind ↔ spec ↔ module."""

from __future__ import annotations

from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.layers.mlp import GeluMLP, SwiGLU
from pulse.blocks.layers.norm import LayerNorm, RMSNorm
from pulse.blocks.layers.positions import LearnedPositions
from pulse.registry import register
from pulse.specs import layers as s

register("attention", role="mixer", spec=s.AttentionSpec, module=CausalSelfAttention, rotary=True)
register("gelu", role="mlp", spec=s.GeluMlpSpec, module=GeluMLP)
register("swiglu", role="mlp", spec=s.SwiGluMlpSpec, module=SwiGLU)
register("layernorm", role="norm", spec=s.LayerNormSpec, module=LayerNorm)
register("rmsnorm", role="norm", spec=s.RMSNormSpec, module=RMSNorm)
register("learned", role="positional", spec=s.LearnedPositionsSpec, module=LearnedPositions)
# Rotary has no module of its own: the stack builder hands its base to the mixers registered with rotary=True.
register("rotary", role="positional", spec=s.RotarySpec)
