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


def _attention(spec: s.AttentionSpec, ctx: BuildContext) -> CausalSelfAttention:
    return CausalSelfAttention(
        ctx.dim, num_heads=spec.num_heads, bias=spec.bias, rotary_base=ctx.rotary_base, **ctx.factory()
    )


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


register("attention", role="mixer", spec=s.AttentionSpec, builder=_attention)
register("gelu", role="mlp", spec=s.GeluMlpSpec,
         builder=lambda spec, ctx: GeluMLP(ctx.dim, hidden_mult=spec.hidden_mult, bias=spec.bias, **ctx.factory()))
register("swiglu", role="mlp", spec=s.SwiGluMlpSpec,
         builder=lambda spec, ctx: SwiGLU(ctx.dim, hidden_mult=spec.hidden_mult, **ctx.factory()))
register("layernorm", role="norm", spec=s.LayerNormSpec,
         builder=lambda spec, ctx: LayerNorm(ctx.dim, eps=spec.eps, **ctx.factory()))
register("rmsnorm", role="norm", spec=s.RMSNormSpec,
         builder=lambda spec, ctx: RMSNorm(ctx.dim, eps=spec.eps, **ctx.factory()))
register("learned", role="positional", spec=s.LearnedPositionsSpec,
         builder=lambda spec, ctx: LearnedPositions(ctx.dim, max_seq_len=spec.max_seq_len, **ctx.factory()))
# Rotary has no module of its own at model level: attention mixers apply it to q and k.
register("rotary", role="positional", spec=s.RotarySpec, builder=None)
register("lm", role="model", spec=LMSpec, builder=_lm)
