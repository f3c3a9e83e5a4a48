"""Specs of the non-LM model kinds (a vector classifier and a sequence encoder), and the
mapping from the flat "seed" parameter names (num_states, gate_type, …) onto mixer tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from pulse import registry
from pulse.errors import PulseError, did_you_mean
from pulse.specs.base import Spec

# Flat parameter name → the field names a mixer spec may use for it, in order of preference.
SEED_FIELDS: dict[str, tuple[str, ...]] = {
    "num_heads": ("num_heads",),
    "num_states": ("num_states",),
    "state_dim": ("state_dim",),
    "chunk_size": ("chunk_size",),
    "gate_type": ("gate", "gate_type"),
}


def seed_mixers(
    layout: Iterable[str],
    values: Mapping[str, Any],
    *,
    explicit: Iterable[str] = (),
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """One mixer table per distinct kind in `layout`, named after the kind.

    Each table takes the flat values (None = the mixer's own default) its spec has a
    field for, then `options[kind]` on top. A value named in `explicit` that no mixer
    of the layout uses is an error, as is an `options` entry for a kind not in the layout.
    """
    from pulse.specs.recipe import spec_class

    kinds = list(dict.fromkeys(layout))
    options = dict(options or {})
    tables: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for kind in kinds:
        registry.get(kind, "mixer")
        fields = spec_class(kind).model_fields
        table: dict[str, Any] = {"kind": kind}
        for flat, names in SEED_FIELDS.items():
            name = next((n for n in names if n in fields), None)
            if name is not None and values.get(flat) is not None:
                table[name] = values[flat]
                used.add(flat)
        table.update(options.get(kind, {}))
        tables[kind] = table
    unused = sorted(f for f in explicit if f in SEED_FIELDS and values.get(f) is not None and f not in used)
    if unused:
        raise PulseError(
            f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} used by none of the layout's mixers "
            f"({', '.join(kinds)}); drop {'it' if len(unused) == 1 else 'them'} or add a mixer kind that has "
            f"{'it' if len(unused) == 1 else 'them'} to the layout."
        )
    stray = sorted(set(options) - set(kinds))
    if stray:
        raise PulseError(
            f"mixer_options names {', '.join(stray)}{did_you_mean(stray[0], kinds)}, which is not in the layout "
            f"({', '.join(kinds)}); options apply to the layout's mixer kinds."
        )
    return tables


class SimplePulseSpec(Spec):
    """Vector classifier: the input is routed into slots, a gated propagator updates them a few times, a head reads them."""

    kind: Literal["simple_pulse"] = "simple_pulse"
    input_dim: int = Field(..., ge=1, description="features per input vector")
    output_dim: int = Field(..., ge=1, description="outputs (classes) per input vector")
    state_dim: int = Field(64, ge=1, description="width of each slot")
    num_states: int = Field(8, ge=1, description="number of slots")
    gate: Literal["gru", "lstm", "mingru"] = Field("gru", description="slot update rule")
    num_iterations: int = Field(3, ge=1, description="propagator updates applied to the slots")
    num_heads: int = Field(4, ge=1, description="heads of the routing and slot-to-slot attention; must divide state_dim")
    communication: bool = Field(True, description="let slots attend to each other after each update")

    @model_validator(mode="after")
    def _check(self) -> SimplePulseSpec:
        if self.state_dim % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide state_dim ({self.state_dim}); pick a divisor of {self.state_dim}"
            )
        return self


class SequencePulseSpec(Spec):
    """Sequence encoder over continuous inputs (b, t, input_dim): the LM's residual layers, an input projection, a head."""

    kind: Literal["sequence_pulse"] = "sequence_pulse"
    input_dim: int = Field(..., ge=1, description="features per time step")
    output_dim: int = Field(..., ge=1, description="outputs per sequence (or per step with output_mode = 'all')")
    output_mode: Literal["last", "all", "mean"] = Field(
        "last",
        description="'last': the last real step; 'all': every step; 'mean': mean over the real steps seen so far "
        "(a running mean carried in the state, so it is causal-safe when the layers are causal)",
    )
    dim: int = Field(64, ge=1, description="model width d (the state dim of the layers)")
    depth: int = Field(2, ge=1, description="number of residual layers")
    layout: list[str] = Field(
        default_factory=lambda: ["attention"],
        description="names from `mixers`, cycled over depth (layer i uses layout[i % len(layout)])",
    )
    mixers: dict[str, MixerSpec] = Field(  # noqa: F821 (resolved against the registry)
        default_factory=lambda: {"attention": {"kind": "attention"}},
        description="named sequence mixers that `layout` refers to",
    )
    layers: dict[int, str] = Field(default_factory=dict, description="per-layer overrides: layer index → mixer name")
    mlp: MlpSpec | None = Field(default=None, description="channel mixer after each mixer; omit for none")  # noqa: F821
    norm: NormSpec = Field(  # noqa: F821
        default_factory=lambda: {"kind": "rmsnorm"}, description="norm before each sublayer and at the end"
    )
    positions: PositionalSpec | None = Field(default=None, description="position encoding; omit for none")  # noqa: F821

    @model_validator(mode="after")
    def _check(self) -> SequencePulseSpec:
        if not self.layout:
            raise ValueError("layout is empty; name at least one mixer from `mixers`")
        for where, name in [*(("layout", n) for n in self.layout), *((f"layers.{i}", n) for i, n in self.layers.items())]:
            if name not in self.mixers:
                raise ValueError(
                    f"{where} names mixer `{name}`, which is not in `mixers`{did_you_mean(name, self.mixers)}; "
                    f"defined mixers: {', '.join(sorted(self.mixers)) or 'none'}"
                )
        if len(self.layout) > self.depth:
            raise ValueError(
                f"layout has {len(self.layout)} entries but depth is {self.depth}; raise depth or shorten the layout"
            )
        for i in self.layers:
            if not 0 <= i < self.depth:
                raise ValueError(f"layers.{i} is outside 0..{self.depth - 1}; per-layer overrides must name an existing layer")
        for name, mixer in self.mixers.items():
            try:
                mixer.check_dim(self.dim)
            except ValueError as err:
                raise ValueError(f"mixers.{name}: {err}") from None
        return self

    def mixer_names(self) -> list[str]:
        return [self.layers.get(i, self.layout[i % len(self.layout)]) for i in range(self.depth)]
