"""Registrations of the non-LM model kinds: simple_pulse and sequence_pulse."""

from __future__ import annotations

from torch import nn

from pulse.assemble.context import BuildContext
from pulse.assemble.layers import residual_parts
from pulse.models.lm import Residual
from pulse.models.sequence import SequencePulse, SimplePulse
from pulse.registry import register
from pulse.specs.models import SequencePulseSpec, SimplePulseSpec


def sequence_parts(spec: SequencePulseSpec, ctx: BuildContext) -> tuple[list[Residual], nn.Module, nn.Module | None]:
    """The residual layers, final norm and positions of a sequence_pulse spec (the LM's layer wiring)."""
    return residual_parts(spec, ctx)


def _sequence(spec: SequencePulseSpec, ctx: BuildContext) -> SequencePulse:
    layers, final_norm, positions = sequence_parts(spec, ctx)
    return SequencePulse(
        spec.input_dim, spec.dim, None, spec.output_dim, output_mode=spec.output_mode,
        layers=layers, final_norm=final_norm, positions=positions, **ctx.factory(),
    )


def _simple(spec: SimplePulseSpec, ctx: BuildContext) -> SimplePulse:
    return SimplePulse(
        spec.input_dim, spec.state_dim, spec.num_states, spec.output_dim, gate_type=spec.gate,
        num_iterations=spec.num_iterations, num_heads=spec.num_heads, communication=spec.communication,
        **ctx.factory(),
    )


register("simple_pulse", role="model", spec=SimplePulseSpec, builder=_simple)
register("sequence_pulse", role="model", spec=SequencePulseSpec, builder=_sequence)
