"""The generic language-model spec: embedding, residual layers, head.

Component fields are forward references ("MixerSpec", …) resolved against the
registry by `pulse.specs.recipe`, so any registered kind of the right role fits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pulse.errors import did_you_mean
from pulse.specs.base import Problem, Spec


class LMSpec(Spec):
    """Causal language model: embed → positions → depth × (norm→mixer→add, norm→mlp→add) → norm → head."""

    kind: Literal["lm"] = "lm"
    vocab_size: int = Field(256, ge=2, description="token vocabulary (256 = bytes)")
    dim: int = Field(256, ge=1, description="model width d")
    depth: int = Field(4, ge=1, description="number of residual layers")
    layout: list[str] = Field(
        default_factory=lambda: ["attention"],
        description="names from `mixers`, cycled over depth (layer i uses layout[i % len(layout)])",
    )
    mixers: dict[str, "MixerSpec"] = Field(
        default_factory=lambda: {"attention": {"kind": "attention"}},
        description="named sequence mixers that `layout` refers to",
    )
    layers: dict[int, str] = Field(
        default_factory=dict,
        description="per-layer overrides: layer index → mixer name, replacing the layout's choice there",
    )
    mlp: "MlpSpec | None" = Field(default=None, description="channel mixer after each mixer; omit for none")
    norm: "NormSpec" = Field(
        default_factory=lambda: {"kind": "rmsnorm"}, description="norm before each sublayer and at the end"
    )
    positions: "PositionalSpec | None" = Field(default=None, description="position encoding; omit for none")
    tie_embeddings: bool = Field(True, description="share the embedding matrix with the output head")
    tokenizer: Literal["bytes"] = Field(
        "bytes", description="text ↔ ids: UTF-8 bytes 0..255, plus bos/eos/pad at 256..258 when vocab_size ≥ 259"
    )

    @model_validator(mode="after")
    def _check(self) -> "LMSpec":
        if not self.layout:
            raise ValueError("layout is empty; name at least one mixer from `mixers`, e.g. layout = [\"attn\"]")
        for where, name in [*(("layout", n) for n in self.layout), *((f"layers.{i}", n) for i, n in self.layers.items())]:
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
                raise Problem(f"layers.{i}", f"layer {i} is outside 0..{self.depth - 1}; per-layer overrides must name an existing layer")
        for name, mixer in self.mixers.items():
            try:
                mixer.check_dim(self.dim)
            except ValueError as err:
                raise Problem(f"mixers.{name}", str(err)) from None
        return self

    def mixer_names(self) -> list[str]:
        """The mixer name used by each of the `depth` layers."""
        return [self.layers.get(i, self.layout[i % len(self.layout)]) for i in range(self.depth)]
