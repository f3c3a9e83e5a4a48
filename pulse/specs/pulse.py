"""Specs of the PULSE slot mixers: pulse, pulse_delta, pulse_managed, pulse_adaptive, hierarchical, pulse_routed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pulse.specs.base import Spec, divides


class SlotMixerFields(Spec):
    """Fields every chunk-recurrent slot mixer shares (not a kind of its own)."""

    slot_dim: int | None = Field(None, ge=1, description="width k of each slot; omit for the model dim")
    chunk_size: int = Field(
        64, ge=1, description="tokens per chunk: slots are written once per chunk (1 = per-token recurrence)"
    )
    gate: Literal["gru", "lstm", "mingru"] = Field(
        "gru", description="slot update: gru, lstm (with a cell state) or mingru (linear in the state, scanned)"
    )
    num_heads: int = Field(4, ge=1, description="heads of every attention inside the layer; must divide slot_dim")
    communication: bool = Field(True, description="multi-head attention among the slots after each update")
    local: Literal["attention", "conv"] = Field(
        "attention",
        description="how a token sees earlier tokens of its own chunk: causal attention, or a causal depthwise conv",
    )
    conv_size: int = Field(4, ge=1, description="taps of the causal conv when local = \"conv\"")

    @model_validator(mode="after")
    def _heads(self) -> "SlotMixerFields":
        if self.slot_dim is not None:
            divides("num_heads", self.num_heads, self.slot_dim, "slot_dim")
        return self

    def check_dim(self, dim: int) -> None:
        if self.slot_dim is None:
            divides("num_heads", self.num_heads, dim)

    def layer_args(self) -> dict:
        """The shared keyword arguments of the layer constructors."""
        return {name: getattr(self, name) for name in SlotMixerFields.model_fields}


class PulseSpec(SlotMixerFields):
    """PULSE layer: tokens read a bank of slots; each chunk is routed into the slots and gated."""

    kind: Literal["pulse"] = "pulse"
    num_slots: int = Field(16, ge=1, description="slots s per sequence")


class PulseDeltaSpec(Spec):
    """PULSE slots written by the delta rule: each token writes key-addressed values into the slots it
    addresses, correcting what they hold (stores associations). The old `pulse` with gate = "delta"."""

    kind: Literal["pulse_delta"] = "pulse_delta"
    num_slots: int = Field(16, ge=1, description="slots s per sequence (the key space of every head)")
    slot_dim: int | None = Field(None, ge=1, description="width k of each slot; omit for the model dim")
    chunk_size: int = Field(64, ge=1, description="tokens per block of the chunkwise form (any gives the same outputs)")
    num_heads: int = Field(4, ge=1, description="heads h; must divide slot_dim (each head holds s × k/h)")
    conv_size: int = Field(4, ge=2, description="taps of the short causal conv that hands each token its neighbours")

    @model_validator(mode="after")
    def _heads(self) -> "PulseDeltaSpec":
        if self.slot_dim is not None:
            divides("num_heads", self.num_heads, self.slot_dim, "slot_dim")
        return self

    def check_dim(self, dim: int) -> None:
        if self.slot_dim is None:
            divides("num_heads", self.num_heads, dim)


class PulseManagedSpec(SlotMixerFields):
    """PULSE layer whose slots come from a StateManager: learned importance, prune and allocate."""

    kind: Literal["pulse_managed"] = "pulse_managed"
    max_slots: int = Field(16, ge=1, description="slots in the bank")
    init_slots: int | None = Field(None, ge=1, description="slots active when built; omit for all of them")

    @model_validator(mode="after")
    def _states(self) -> "PulseManagedSpec":
        if self.init_slots is not None and self.init_slots > self.max_slots:
            raise ValueError(
                f"init_slots ({self.init_slots}) exceeds max_slots ({self.max_slots}); "
                f"lower init_slots or raise max_slots"
            )
        return self


class PulseAdaptiveSpec(SlotMixerFields):
    """PULSE layer with an adaptive allocator: each chunk's slot budget is learned from the content so far."""

    kind: Literal["pulse_adaptive"] = "pulse_adaptive"
    min_slots: int = Field(4, ge=1, description="slots always in use")
    max_slots: int = Field(16, ge=1, description="slots available")
    features: int = Field(8, ge=1, description="width of the allocator's content features")
    temperature: float = Field(0.5, gt=0, description="softness of the slot masks (smaller = closer to a hard cut)")

    @model_validator(mode="after")
    def _states(self) -> "PulseAdaptiveSpec":
        if self.min_slots > self.max_slots:
            raise ValueError(
                f"min_slots ({self.min_slots}) exceeds max_slots ({self.max_slots}); lower min_slots"
            )
        return self


class HierarchicalSpec(SlotMixerFields):
    """Hierarchical states: token-, chunk- and global-level slots updated every 1, r and r² chunks."""

    kind: Literal["hierarchical"] = "hierarchical"
    chunk_size: int = Field(
        64, ge=1, description="tokens per chunk: the token level is written once per chunk (64, as pulse)"
    )
    token_slots: int = Field(8, ge=1, description="slots of the token level")
    chunk_slots: int = Field(4, ge=1, description="slots of the chunk level")
    global_slots: int = Field(4, ge=1, description="slots of the global level")
    ratio: int = Field(2, ge=2, description="the chunk level ticks every `ratio` chunks, the global level every ratio²")


class PulseRoutedSpec(Spec):
    """PULSE's routed memory (Mixture-of-Memories): a router sends each token into the top-k of M gated
    delta-rule memories (each with its own key/value projections), plus one shared memory every token
    writes; a memory a token is not routed to is left untouched. State (M + 1)·h·k·v + conv."""

    kind: Literal["pulse_routed"] = "pulse_routed"
    num_memories: int = Field(4, ge=1, description="routed memories M")
    top_k: int = Field(2, ge=1, description="memories each token writes and reads (besides the shared one)")
    gate: Literal["softmax", "renormalized"] = Field(
        "softmax",
        description="weight of a chosen memory's read: its router probability (softmax; the router learns at every "
        "top_k) or that renormalized over the chosen ones (renormalized: MoM's; no router gradient at top_k = 1; "
        "checkpoints stored before this field load as it)",
    )
    shared: bool = Field(True, description="one more memory that every token writes and reads")
    num_heads: int = Field(4, ge=1, description="heads h per memory, each a k × v fast-weight matrix")
    head_dim: int = Field(32, ge=1, description="key width k per head")
    expand_v: float = Field(2.0, gt=0, description="value width per head as a multiple of head_dim (whole)")
    conv_size: int = Field(4, ge=2, description="width of the short causal conv on q, k and v")
    chunk_size: int = Field(64, ge=1, description="tokens per chunk of the chunkwise form (speed only)")

    @model_validator(mode="after")
    def _check(self) -> "PulseRoutedSpec":
        if self.top_k > self.num_memories:
            raise ValueError(f"top_k ({self.top_k}) exceeds num_memories ({self.num_memories}); lower top_k")
        head_v = self.head_dim * self.expand_v
        if head_v != int(head_v):
            raise ValueError(f"head_dim · expand_v = {head_v} is not a whole value width; pick expand_v so it is")
        return self
