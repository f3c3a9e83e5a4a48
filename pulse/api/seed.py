"""The seed's size-first constructors: `SequencePulse(input_dim, state_dim, num_states, output_dim, …)`.

`pulse.models.sequence.SequenceModel` takes built parts; this facade turns the seed's sizes into a
validated `sequence_pulse` spec and lets the assembler build the parts, so a model made here and
one made from the equivalent recipe are the same module.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulse.api.config import seed_mixers
from pulse.assemble import make_spec
from pulse.assemble.context import BuildContext
from pulse.assemble.models import stack_parts
from pulse.errors import seed_alias
from pulse.models.sequence import SequenceModel


class SequencePulse(SequenceModel):
    """A SequenceModel from sizes: x (b, t, input_dim) → (b, output_dim) ('last'/'mean') or (b, t, output_dim).

    `state_dim` is the model width; `num_states`, `num_heads`, `chunk_size` and `gate_type` go to
    every mixer of `layout` whose spec has them (as num_slots, num_heads, chunk_size, gate).
    `model(x)` returns the outputs; `model(x, return_state=True)` also returns the state.
    """

    def __init__(
        self,
        input_dim: int,
        state_dim: int | None = None,
        num_states: int | None = None,
        output_dim: int = 1,
        *,
        output_mode: str = "last",
        num_layers: int = 2,
        layout: Sequence[str] = ("pulse",),
        num_heads: int | None = None,
        chunk_size: int | None = None,
        gate_type: str | None = None,
        mlp: str | None = "swiglu",
        norm: str = "rmsnorm",
        device=None,
        dtype=None,
        dim: int | None = None,
        num_slots: int | None = None,
        gate: str | None = None,
    ):
        # the library's names (dim, num_slots, gate) are accepted beside the seed's
        state_dim = seed_alias("state_dim", state_dim, "dim", dim) or 64
        num_states = seed_alias("num_states", num_states, "num_slots", num_slots)
        gate_type = seed_alias("gate_type", gate_type, "gate", gate)
        mixers = seed_mixers(
            layout, {"num_states": num_states, "num_heads": num_heads, "chunk_size": chunk_size, "gate_type": gate_type}
        )
        spec = make_spec(
            "sequence_pulse", "model", input_dim=input_dim, output_dim=output_dim, output_mode=output_mode,
            dim=state_dim, depth=num_layers, layout=list(layout), mixers=mixers,
            mlp={"kind": mlp} if mlp else None, norm={"kind": norm},
        )
        parts = stack_parts(spec, BuildContext(state_dim, device, dtype))
        super().__init__(input_dim, state_dim, output_dim, output_mode=output_mode, device=device, dtype=dtype, **parts)
        self.spec = spec


def sequence_pulse(input_dim: int, state_dim: int | None = None, num_states: int | None = None, output_dim: int = 1,
                   **options) -> SequencePulse:
    """The seed's sequence model from sizes; see SequencePulse for the options."""
    return SequencePulse(input_dim, state_dim, num_states, output_dim, **options)
