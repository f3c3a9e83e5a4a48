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
    return PulseLayer(ctx.dim, num_slots=spec.num_slots, **spec.layer_args(), **ctx.factory())


def _pulse_managed(spec: s.PulseManagedSpec, ctx: BuildContext) -> PulseLayer:
    manager = StateManager(
        spec.slot_dim or ctx.dim, max_slots=spec.max_slots, init_slots=spec.init_slots, **ctx.factory()
    )
    return PulseLayer(ctx.dim, num_slots=spec.max_slots, manager=manager, **spec.layer_args(), **ctx.factory())


def _pulse_adaptive(spec: s.PulseAdaptiveSpec, ctx: BuildContext) -> PulseLayer:
    allocator = AdaptiveStateAllocator(
        ctx.dim, min_slots=spec.min_slots, max_slots=spec.max_slots, features=spec.features,
        temperature=spec.temperature, **ctx.factory(),
    )
    return PulseLayer(ctx.dim, num_slots=spec.max_slots, allocator=allocator, **spec.layer_args(), **ctx.factory())


def _hierarchical(spec: s.HierarchicalSpec, ctx: BuildContext) -> HierarchicalStateManager:
    return HierarchicalStateManager(
        ctx.dim, token_slots=spec.token_slots, chunk_slots=spec.chunk_slots, global_slots=spec.global_slots,
        ratio=spec.ratio, **spec.layer_args(), **ctx.factory(),
    )


register("pulse", role="mixer", spec=s.PulseSpec, builder=_pulse)
register("pulse_managed", role="mixer", spec=s.PulseManagedSpec, builder=_pulse_managed)
register("pulse_adaptive", role="mixer", spec=s.PulseAdaptiveSpec, builder=_pulse_adaptive)
register("hierarchical", role="mixer", spec=s.HierarchicalSpec, builder=_hierarchical)
