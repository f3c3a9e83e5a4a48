"""Specs of the model kinds: the generic LM and the sequence encoder share one residual-stack
spec (`StackFields`, one validator); the vector classifier has its own.

Component fields are forward references ("MixerSpec", …) resolved against the registry by
`pulse.specs.recipe`, so any registered kind of the right role fits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pulse import registry
from pulse.errors import did_you_mean
from pulse.specs.base import Problem, Spec, divides


class StackFields(Spec):
    """The residual stack's fields (not a kind of its own): width, depth, mixers and their layout,
    MLP, norm and positions. One validator checks them for every model kind that has a stack."""

    dim: int = Field(256, ge=1, description="model width d")
    depth: int = Field(4, ge=1, description="number of residual layers")
    layout: list[str] = Field(
        default_factory=lambda: ["attention"],
        description="names from `mixers`, cycled over depth (layer i uses layout[i % len(layout)])",
    )
    mixers: dict[str, "MixerSpec"] = Field(  # noqa: F821 (resolved against the registry)
        default_factory=lambda: {"attention": {"kind": "attention"}},
        description="named sequence mixers that `layout` refers to",
    )
    layers: dict[int, str] = Field(
        default_factory=dict,
        description="per-layer overrides: layer index → mixer name, replacing the layout's choice there",
    )
    mlp: "MlpSpec | None" = Field(default=None, description="channel mixer after each mixer; omit for none")  # noqa: F821
    norm: "NormSpec" = Field(  # noqa: F821
        default_factory=lambda: {"kind": "rmsnorm"}, description="norm before each sublayer and at the end"
    )
    positions: "PositionalSpec | None" = Field(  # noqa: F821
        default=None,
        description="position encoding; omit for none (rotary is applied inside attention mixers, so it needs one)",
    )

    @model_validator(mode="after")
    def _check_stack(self) -> "StackFields":
        if not self.layout:
            raise ValueError("layout is empty; name at least one mixer from `mixers`, e.g. layout = [\"attn\"]")
        for where, name in [
            *(("layout", n) for n in self.layout), *((f"layers.{i}", n) for i, n in self.layers.items())
        ]:
            if name not in self.mixers:
                known = ", ".join(sorted(self.mixers)) or "none defined"
                raise Problem(
                    where,
                    f"names mixer `{name}`, which is not in `mixers`{did_you_mean(name, self.mixers)}; "
                    f"defined mixers: {known}",
                )
        if len(self.layout) > self.depth:
            raise ValueError(
                f"layout has {len(self.layout)} entries but depth is {self.depth}; "
                f"raise depth to at least {len(self.layout)} or shorten the layout"
            )
        for i in self.layers:
            if not 0 <= i < self.depth:
                raise Problem(
                    f"layers.{i}",
                    f"layer {i} is outside 0..{self.depth - 1}; per-layer overrides must name an existing layer",
                )
        used = set(self.mixer_names())
        for name in sorted(set(self.mixers) - used):
            hint = did_you_mean(name, used)
            if hint:  # an unused table one letter away from a used one is a typo, not an alternative
                raise Problem(f"mixers.{name}", f"is used by no layer{hint}; rename it, or add `{name}` to the layout")
        for name, mixer in self.mixers.items():
            try:
                mixer.check_dim(self.dim)
            except ValueError as err:
                raise Problem(f"mixers.{name}", str(err)) from None
        if self.positions is not None and self.positions.kind == "rotary":
            used = {self.mixers[n].kind for n in self.mixer_names()}
            if not any(registry.get(kind).rotary for kind in used):
                takers = ", ".join(e.kind for e in registry.entries(role="mixer") if e.rotary)
                raise Problem(
                    "positions",
                    f"rotary positions are applied inside attention mixers ({takers}), and no layer uses one "
                    f"(layers use {', '.join(sorted(used))}); use kind = \"learned\" or remove [model.positions]",
                )
        return self

    def mixer_names(self) -> list[str]:
        """The mixer name used by each of the `depth` layers."""
        return [self.layers.get(i, self.layout[i % len(self.layout)]) for i in range(self.depth)]


class LMSpec(StackFields):
    """Causal language model: embed → positions → depth × (norm→mixer→add, norm→mlp→add) → norm → head."""

    kind: Literal["lm"] = "lm"
    vocab_size: int = Field(256, ge=2, description="token vocabulary (256 = bytes)")
    tie_embeddings: bool = Field(True, description="share the embedding matrix with the output head")
    tokenizer: Literal["bytes"] = Field(
        "bytes", description="text ↔ ids: UTF-8 bytes 0..255, plus bos/eos/pad at 256..258 when vocab_size ≥ 259"
    )


class SequencePulseSpec(StackFields):
    """Sequence encoder over continuous inputs (b, t, input_dim): the LM's residual layers, an input projection, a head."""  # noqa: E501  (the schema's description)

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


class SimplePulseSpec(Spec):
    """Vector classifier: the input is routed into slots, a gated propagator updates them a few times, a head reads them."""  # noqa: E501  (the schema's description)

    kind: Literal["simple_pulse"] = "simple_pulse"
    input_dim: int = Field(..., ge=1, description="features per input vector")
    output_dim: int = Field(..., ge=1, description="outputs (classes) per input vector")
    slot_dim: int = Field(64, ge=1, description="width of each slot")
    num_slots: int = Field(8, ge=1, description="number of slots")
    gate: Literal["gru", "lstm", "mingru"] = Field("gru", description="slot update rule")
    num_iterations: int = Field(3, ge=1, description="propagator updates applied to the slots")
    num_heads: int = Field(4, ge=1, description="heads of the routing and slot-to-slot attention; must divide slot_dim")
    communication: bool = Field(True, description="let slots attend to each other after each update")

    @model_validator(mode="after")
    def _check(self) -> SimplePulseSpec:
        divides("num_heads", self.num_heads, self.slot_dim, "slot_dim")
        return self
