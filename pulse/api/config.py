"""The seed's flat names (hidden_size, num_states, gate_type, …) and how they map onto a recipe.

PulseConfig speaks the names of the original PULSE description and maps onto a recipe's
[model] table, so the Python API and a TOML recipe build the same model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pulse import registry
from pulse.data.tokenizer import NUM_BYTES
from pulse.errors import PulseError, did_you_mean
from pulse.specs.load import recipe_from_dict
from pulse.specs.messages import format_errors
from pulse.specs.recipe import RecipeBase, spec_class

# Seed name → the field names a mixer spec may use for it, in order of preference.
SEED_FIELDS: dict[str, tuple[str, ...]] = {
    "num_heads": ("num_heads",),
    "num_states": ("num_slots",),
    "state_dim": ("slot_dim",),
    "chunk_size": ("chunk_size",),
    "gate_type": ("gate",),
}


def seed_mixers(
    layout: Iterable[str],
    values: Mapping[str, Any],
    *,
    explicit: Iterable[str] = (),
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """One mixer table per distinct kind in `layout`, named after the kind.

    Each table takes the seed-named values (None = the mixer's own default) its spec has a
    field for, then `options[kind]` on top. A value named in `explicit` that no mixer
    of the layout uses is an error, as is an `options` entry for a kind not in the layout.
    """
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
        it = "it" if len(unused) == 1 else "them"
        raise PulseError(
            f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} used by none of the layout's mixers "
            f"({', '.join(kinds)}); drop {it} or add a mixer kind that has {it} to the layout."
        )
    stray = sorted(set(options) - set(kinds))
    if stray:
        raise PulseError(
            f"mixer_options names {', '.join(stray)}{did_you_mean(stray[0], kinds)}, which is not in the layout "
            f"({', '.join(kinds)}); options apply to the layout's mixer kinds."
        )
    return tables


class PulseConfig(BaseModel):
    """A language model in flat, seed-style names; `to_recipe()` gives the equivalent recipe.

    `layout` lists mixer kinds (any registered ones), cycled over `num_layers`. The
    mixer fields (num_heads, num_states → num_slots, state_dim → slot_dim, chunk_size,
    gate_type → gate) go to every
    mixer of the layout whose spec has them; None keeps that mixer's own default, and
    setting one that no mixer of the layout uses is an error. `mixer_options` adds any
    other field per kind, e.g. {"pulse": {"communication": False}}.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(NUM_BYTES + 3, ge=2, description="token ids; 259 = bytes + bos/eos/pad")
    hidden_size: int = Field(256, ge=1, description="model width d")
    num_layers: int = Field(4, ge=1, description="residual layers")
    layout: list[str] = Field(default_factory=lambda: ["pulse"], description="mixer kinds, cycled over the layers")
    num_heads: int | None = Field(None, ge=1, description="heads of every mixer that has heads")
    num_states: int | None = Field(None, ge=1, description="slots per PULSE layer")
    state_dim: int | None = Field(None, ge=1, description="slot width of PULSE layers")
    chunk_size: int | None = Field(None, ge=1, description="tokens per chunk of chunk-recurrent mixers")
    gate_type: str | None = Field(None, description="slot update rule: gru, lstm or mingru")
    mixer_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="more mixer fields, per kind")
    position_embedding: Literal["rotary", "learned", "none"] | None = Field(
        None, description="position encoding; None = rotary when the layout has an attention mixer, else none"
    )
    max_position_embeddings: int = Field(2048, ge=1, description="longest sequence with learned positions")
    mlp: str | None = Field("swiglu", description="channel mixer kind after each mixer; None for none")
    norm: str = Field("rmsnorm", description="norm kind")
    tie_word_embeddings: bool = Field(True, description="share the embedding matrix with the output head")

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise PulseError(format_errors(err, type(self), "PulseConfig")) from None

    def to_model_dict(self) -> dict[str, Any]:
        """The recipe's [model] table."""
        mixers = seed_mixers(self.layout, self.model_dump(), explicit=self.model_fields_set, options=self.mixer_options)
        position = self.position_embedding
        if position is None:
            position = "rotary" if any(registry.get(k, "mixer").rotary for k in self.layout) else "none"
        positions = {
            "rotary": {"kind": "rotary"},
            "learned": {"kind": "learned", "max_seq_len": self.max_position_embeddings},
            "none": None,
        }[position]
        return {
            "kind": "lm",
            "vocab_size": self.vocab_size,
            "dim": self.hidden_size,
            "depth": self.num_layers,
            "layout": list(self.layout),
            "mixers": mixers,
            "mlp": {"kind": self.mlp} if self.mlp else None,
            "norm": {"kind": self.norm},
            "positions": positions,
            "tie_embeddings": self.tie_word_embeddings,
            "tokenizer": "bytes",
        }

    def to_recipe(self) -> RecipeBase:
        """The validated recipe ([model] only) that builds this model."""
        return recipe_from_dict({"model": self.to_model_dict()}, source="PulseConfig")
