"""Registrations of the PULSE slot mixers: kind ↔ spec ↔ builder."""

from __future__ import annotations

from pulse.blocks.pulse.allocator import AdaptiveStateAllocator
from pulse.blocks.pulse.hierarchical import HierarchicalStateManager
from pulse.blocks.pulse.pulse_layer import PulseLayer
from pulse.blocks.pulse.state_manager import StateManager
from pulse.assemble.context import BuildContext
from pulse.registry import register
from pulse.specs import pulse as s


def _pulse(spec: s.PulseSpec, ctx: BuildContext) -> PulseLayer:
    return PulseLayer(ctx.dim, num_states=spec.num_states, **spec.layer_args(), **ctx.factory())


def _pulse_managed(spec: s.PulseManagedSpec, ctx: BuildContext) -> PulseLayer:
    manager = StateManager(
        spec.state_dim or ctx.dim, max_states=spec.max_states, init_states=spec.init_states, **ctx.factory()
    )
    return PulseLayer(ctx.dim, num_states=spec.max_states, manager=manager, **spec.layer_args(), **ctx.factory())


def _pulse_adaptive(spec: s.PulseAdaptiveSpec, ctx: BuildContext) -> PulseLayer:
    allocator = AdaptiveStateAllocator(
        ctx.dim, min_states=spec.min_states, max_states=spec.max_states, features=spec.features,
        temperature=spec.temperature, **ctx.factory(),
    )
    return PulseLayer(ctx.dim, num_states=spec.max_states, allocator=allocator, **spec.layer_args(), **ctx.factory())


def _hierarchical(spec: s.HierarchicalSpec, ctx: BuildContext) -> HierarchicalStateManager:
    return HierarchicalStateManager(
        ctx.dim, token_states=spec.token_states, chunk_states=spec.chunk_states, global_states=spec.global_states,
        ratio=spec.ratio, **spec.layer_args(), **ctx.factory(),
    )


register("pulse", role="mixer", spec=s.PulseSpec, builder=_pulse)
register("pulse_managed", role="mixer", spec=s.PulseManagedSpec, builder=_pulse_managed)
register("pulse_adaptive", role="mixer", spec=s.PulseAdaptiveSpec, builder=_pulse_adaptive)
register("hierarchical", role="mixer", spec=s.HierarchicalSpec, builder=_hierarchical)
