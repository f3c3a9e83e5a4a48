"""Registrations of the first blocks and the generic LM: kind ↔ spec ↔ builder."""

from __future__ import annotations

from torch import nn

from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.layers.mlp import GeluMLP, SwiGLU
from pulse.blocks.layers.norm import LayerNorm, RMSNorm
from pulse.blocks.layers.positions import LearnedPositions
from pulse.assemble.context import BuildContext
from pulse.models.lm import LanguageModel, Residual
from pulse.registry import register
from pulse.specs import layers as s
from pulse.specs.model import LMSpec


def residual_parts(spec, ctx: BuildContext) -> tuple[list[Residual], nn.Module, nn.Module | None]:
    """Residual layers, final norm and positions of any spec with the LM's wiring fields
    (dim, mixers, layout/layers, mlp, norm, positions)."""
    from pulse.assemble import build_component

    rotary = spec.positions.base if spec.positions is not None and spec.positions.kind == "rotary" else None
    ctx = BuildContext(spec.dim, ctx.device, ctx.dtype, rotary)
    layers = []
    for name in spec.mixer_names():
        mlp = build_component(spec.mlp, ctx) if spec.mlp is not None else None
        layers.append(
            Residual(
                build_component(spec.mixers[name], ctx),
                build_component(spec.norm, ctx),
                mlp,
                build_component(spec.norm, ctx) if mlp is not None else None,
            )
        )
    positions = None
    if spec.positions is not None and spec.positions.kind != "rotary":
        positions = build_component(spec.positions, ctx)
    return layers, build_component(spec.norm, ctx), positions


def _lm(spec: LMSpec, ctx: BuildContext) -> LanguageModel:
    layers, final_norm, positions = residual_parts(spec, ctx)
    return LanguageModel(
        vocab_size=spec.vocab_size,
        dim=spec.dim,
        layers=layers,
        final_norm=final_norm,
        positions=positions,
        tie_embeddings=spec.tie_embeddings,
        **ctx.factory(),
    )


register("attention", role="mixer", spec=s.AttentionSpec, module=CausalSelfAttention, rotary=True)
register("gelu", role="mlp", spec=s.GeluMlpSpec, module=GeluMLP)
register("swiglu", role="mlp", spec=s.SwiGluMlpSpec, module=SwiGLU)
register("layernorm", role="norm", spec=s.LayerNormSpec, module=LayerNorm)
register("rmsnorm", role="norm", spec=s.RMSNormSpec, module=RMSNorm)
register("learned", role="positional", spec=s.LearnedPositionsSpec, module=LearnedPositions)
# Rotary has no module of its own at model level: attention mixers apply it to q and k.
register("rotary", role="positional", spec=s.RotarySpec)
register("lm", role="model", spec=LMSpec, builder=_lm)
