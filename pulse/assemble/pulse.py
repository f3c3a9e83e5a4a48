"""Registrations of the PULSE slot mixers: kind ↔ spec ↔ module (builders where a manager or allocator is
composed in). Each kind is one class: `pulse_delta` (the old gate "delta") is its own kind."""

from __future__ import annotations

from pulse.assemble.context import BuildContext
from pulse.blocks.pulse.allocator import AdaptiveStateAllocator
from pulse.blocks.pulse.delta_slots import DeltaSlotLayer
from pulse.blocks.pulse.hierarchical import HierarchicalStateManager
from pulse.blocks.pulse.pulse_layer import PulseLayer
from pulse.blocks.pulse.routed_memory import RoutedDeltaMemory
from pulse.blocks.pulse.state_manager import StateManager
from pulse.registry import register
from pulse.specs import pulse as s


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


register("pulse", role="mixer", spec=s.PulseSpec, module=PulseLayer)
register("pulse_delta", role="mixer", spec=s.PulseDeltaSpec, module=DeltaSlotLayer)
register("pulse_managed", role="mixer", spec=s.PulseManagedSpec, builder=_pulse_managed)
register("pulse_adaptive", role="mixer", spec=s.PulseAdaptiveSpec, builder=_pulse_adaptive)
register("hierarchical", role="mixer", spec=s.HierarchicalSpec, module=HierarchicalStateManager)
register("pulse_routed", role="mixer", spec=s.PulseRoutedSpec, module=RoutedDeltaMemory)
