"""Registrations of the model kinds, and the one builder of their residual stack."""

from __future__ import annotations

from typing import Any

from pulse.assemble.component import build_component
from pulse.assemble.context import BuildContext
from pulse.models.lm import LanguageModel
from pulse.models.sequence import SequenceModel, SimplePulse
from pulse.models.stack import Residual
from pulse.registry import register
from pulse.specs.models import LMSpec, SequencePulseSpec, SimplePulseSpec, StackFields


def stack_parts(spec: StackFields, ctx: BuildContext) -> dict[str, Any]:
    """The residual stack's parts of any model spec: `layers`, `final_norm` and `positions`.

    Rotary positions are the stack's concern: their base goes to the mixers registered with
    rotary=True (the spec's validator refuses rotary when no layer uses one).
    """
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
    return {"layers": layers, "final_norm": build_component(spec.norm, ctx), "positions": positions}


def _lm(spec: LMSpec, ctx: BuildContext) -> LanguageModel:
    return LanguageModel(
        vocab_size=spec.vocab_size, dim=spec.dim, tie_embeddings=spec.tie_embeddings,
        **stack_parts(spec, ctx), **ctx.factory(),
    )


def _sequence(spec: SequencePulseSpec, ctx: BuildContext) -> SequenceModel:
    return SequenceModel(
        spec.input_dim,
        spec.dim,
        spec.output_dim,
        output_mode=spec.output_mode,
        **stack_parts(spec, ctx),
        **ctx.factory(),
    )


register("lm", role="model", spec=LMSpec, builder=_lm)
register("simple_pulse", role="model", spec=SimplePulseSpec, module=SimplePulse)
register("sequence_pulse", role="model", spec=SequencePulseSpec, builder=_sequence)
