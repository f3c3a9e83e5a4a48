"""Spec → module for one component: the default builder (spec fields → constructor) or the kind's own."""

from __future__ import annotations

from typing import Any

from torch import nn

from pulse import registry
from pulse.assemble.context import BuildContext
from pulse.errors import PulseError
from pulse.specs.base import Spec


def spec_arguments(spec: Spec) -> dict[str, Any]:
    """The constructor keyword arguments a spec stands for: every field but `kind`."""
    return {name: getattr(spec, name) for name in type(spec).model_fields if name != "kind"}


def build_component(spec: Spec, ctx: BuildContext) -> nn.Module:
    """The module of one validated spec: its kind's builder, or `module(dim, **fields)` (models: `module(**fields)`)."""
    entry = registry.get(spec.kind)
    if entry.builder is not None:
        return entry.builder(spec, ctx)
    if entry.module is None:
        raise PulseError(f"kind `{spec.kind}` ({entry.role}) is applied inside other blocks and cannot be built alone.")
    extra = {"rotary_base": ctx.rotary_base} if entry.rotary else {}
    if entry.role == "task":  # a task object is made from its spec alone
        return entry.module(spec)
    if entry.role == "model":  # a model kind's spec carries its own sizes
        return entry.module(**spec_arguments(spec), **ctx.factory())
    return entry.module(ctx.dim, **spec_arguments(spec), **extra, **ctx.factory())
