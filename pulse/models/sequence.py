"""Models over continuous inputs: SimplePulse (one vector → classes) and SequenceModel
(a sequence → one output, or one per step; `pulse.SequencePulse` builds it from sizes).

# b batch · t time · i input features · d model · s slots · o outputs
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pulse.blocks.pulse.propagator import StatePropagator
from pulse.blocks.pulse.router import TokenToStateRouter
from pulse.contract import no_weight_decay
from pulse.errors import PulseError, seed_alias
from pulse.models.stack import Residual, ResidualStack, StackHolder

OUTPUT_MODES = ("last", "all", "mean")


class SimplePulse(nn.Module):
    """Classifier of one vector x (b, i): route its features into s slots, update them, read them out.

    Each feature j becomes a token x_j·a_j + c_j (a_j, c_j learned d-vectors); the slots
    (learned start values) query those tokens (TokenToStateRouter), the propagator gates
    the routed update into the slots and lets them communicate; this repeats
    `num_iterations` times, re-routing from the updated slots each time. The head reads
    LayerNorm(mean over slots) → W x + b. Cost per vector: num_iterations × (router with
    t = i tokens + propagator on s slots) + 2·d·o. Params: s·d + 2·i·d + router
    (4·d²) + propagator + 2·d + d·o + o.
    """

    def __init__(
        self,
        input_dim: int,
        slot_dim: int = 64,
        num_slots: int = 8,
        output_dim: int | None = None,
        *,
        gate: str = "gru",
        num_iterations: int = 3,
        num_heads: int = 4,
        communication: bool = True,
        device=None,
        dtype=None,
        state_dim: int | None = None,
        num_states: int | None = None,
        gate_type: str | None = None,
    ):
        super().__init__()
        # the seed's names (state_dim, num_states, gate_type) are accepted as aliases
        slot_dim = seed_alias("slot_dim", slot_dim, "state_dim", state_dim, default=64)
        num_slots = seed_alias("num_slots", num_slots, "num_states", num_states, default=8)
        gate = seed_alias("gate", gate, "gate_type", gate_type, default="gru")
        if output_dim is None:
            raise PulseError(
                "SimplePulse needs output_dim (classes per input), e.g. SimplePulse(16, 64, 8, output_dim=3)."
            )
        if num_iterations < 1:
            raise PulseError(f"num_iterations must be ≥ 1, got {num_iterations}.")
        factory = {"device": device, "dtype": dtype}
        self.input_dim, self.slot_dim, self.num_slots, self.output_dim = input_dim, slot_dim, num_slots, output_dim
        self.num_iterations = num_iterations
        self.slots = no_weight_decay(nn.Parameter(torch.randn(num_slots, slot_dim, **factory) * slot_dim**-0.5))
        self.feature_scale = nn.Parameter(torch.randn(input_dim, slot_dim, **factory) * slot_dim**-0.5)
        self.feature_bias = nn.Parameter(torch.randn(input_dim, slot_dim, **factory) * slot_dim**-0.5)
        self.router = TokenToStateRouter(slot_dim, num_heads=num_heads, **factory)
        self.propagator = StatePropagator(
            slot_dim, gate=gate, num_heads=num_heads, communication=communication, **factory
        )
        self.norm = nn.LayerNorm(slot_dim, **factory)
        self.head = nn.Linear(slot_dim, output_dim, **factory)

    def example_input(self, batch: int, seq_len: int = 1, *, device=None) -> Tensor:
        """A batch of input vectors (b, i); seq_len is ignored (one vector is one example)."""
        return torch.randn(batch, self.input_dim, device=device)

    def states(self, x: Tensor) -> Tensor:
        """The slots (b, s, d) after `num_iterations` updates from x (b, i)."""
        if x.ndim != 2 or x.shape[-1] != self.input_dim or not x.is_floating_point():
            raise PulseError(
                f"SimplePulse expects float inputs of shape (batch, {self.input_dim}), got {tuple(x.shape)} {x.dtype}."
            )
        tokens = x.unsqueeze(-1) * self.feature_scale + self.feature_bias  # (b, i, d)
        h = self.slots.expand(x.shape[0], -1, -1)  # (b, s, d)
        state = (h, self.propagator.init_cell(h)) if self.propagator.gate == "lstm" else h
        for _ in range(self.num_iterations):
            update = self.router(h, tokens)  # (b, s, d)
            state = self.propagator(state, update)
            h = state[0] if isinstance(state, tuple) else state
        return h

    def forward(self, x: Tensor) -> Tensor:
        """Logits (b, o) for input vectors x (b, i)."""
        return self.head(self.norm(self.states(x).mean(dim=1)))

    def flops_per_token(self, seq_len: int = 1) -> float:
        """Forward FLOPs per input vector (one vector counts as one token)."""
        d, s, i = self.slot_dim, self.num_slots, self.input_dim
        per_iteration = self.router.flops(s, i) + self.propagator.flops(s)
        return 2.0 * i * d + self.num_iterations * per_iteration + 2.0 * d * self.output_dim

    def state_numel(self, seq_len: int = 1) -> int:
        lstm = self.propagator.gate == "lstm"
        return self.num_slots * self.slot_dim * (2 if lstm else 1)

    def param_count(self) -> int:
        d, s, i, o = self.slot_dim, self.num_slots, self.input_dim, self.output_dim
        return s * d + 2 * i * d + self.router.param_count() + self.propagator.param_count() + 2 * d + d * o + o


class SequenceModel(StackHolder):
    """Encoder: x (b, t, i) → W_in x → the residual stack (any registered mixers; the child `stack`) → head.

    output_mode 'last' gives head(h) at each row's last real step (b, o); 'all' gives
    head(h) at every step (b, t, o), zero at padded steps; 'mean' gives head of the
    mean of h over the real steps seen so far (b, o). The running sum, count and last
    step travel in the state, so feeding a sequence in pieces (state carried) gives
    the same output as one pass, and — with causal layers — the output after a prefix
    depends only on that prefix: 'mean' is a causal-safe running mean. With
    bidirectional layers only the final output of a whole sequence is meaningful.

    `model(x)` returns the outputs; `model(x, state=…, return_state=True)` (or
    `model.forward_with_state`) also returns the state to continue from.

    `mask` (b, t), true at real steps, must be right padding (each row a run of real
    steps, then padding). Padded steps change nothing: causal layers never let them
    reach a real step, and the pooled outputs skip them. A row that ends in padding
    is finished; its state cannot be continued.

    Built from parts by the assembler (`[model] kind = "sequence_pulse"`), or from sizes
    with `pulse.SequencePulse(input_dim, state_dim, num_states, output_dim, …)`.
    Params: i·d + d (input) + stack + d·o + o (head).
    """

    def __init__(
        self,
        input_dim: int,
        dim: int,
        output_dim: int,
        *,
        layers: list[Residual],
        final_norm: nn.Module,
        positions: nn.Module | None = None,
        output_mode: str = "last",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if output_mode not in OUTPUT_MODES:
            raise PulseError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}.")
        self.input_dim, self.dim, self.output_dim, self.output_mode = input_dim, dim, output_dim, output_mode
        self.proj = nn.Linear(input_dim, dim, device=device, dtype=dtype)
        self.stack = ResidualStack(layers=layers, final_norm=final_norm, positions=positions)
        self.head = nn.Linear(dim, output_dim, device=device, dtype=dtype)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.proj.weight.device
        dtype = dtype if dtype is not None else self.proj.weight.dtype
        zeros = torch.zeros(batch, self.dim, device=device, dtype=dtype)
        return {
            **self.stack.stack_state(batch, device=device, dtype=dtype),
            "sum": zeros,
            "last": zeros.clone(),
            "count": torch.zeros(batch, dtype=torch.long, device=device),
            "closed": torch.zeros(batch, dtype=torch.bool, device=device),
        }

    def example_input(self, batch: int, seq_len: int, *, device=None) -> Tensor:
        return torch.randn(batch, seq_len, self.input_dim, device=device)

    def _check(self, x: Tensor, mask: Tensor | None, state: dict[str, Any]) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.input_dim or x.shape[1] == 0 or not x.is_floating_point():
            raise PulseError(
                f"SequenceModel expects float inputs of shape (batch, time ≥ 1, {self.input_dim}), "
                f"got {tuple(x.shape)} {x.dtype}."
            )
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise PulseError(
                f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {tuple(mask.shape)} {mask.dtype}."
            )
        if x.device.type == "meta":
            return mask
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise PulseError("mask must be right padding: in each row the real steps come first, then only padding.")
        if state["closed"].any():
            rows = state["closed"].nonzero().flatten().tolist()
            raise PulseError(
                f"rows {rows[:8]} ended with padding in an earlier call; a padded sequence cannot be continued."
            )
        return mask

    def forward(
        self, x: Tensor, mask: Tensor | None = None, state: dict[str, Any] | None = None, *, return_state: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Outputs for x (b, t, i): (b, o), or (b, t, o) with output_mode 'all'; with return_state, (outputs, state)."""
        y, new_state = self.forward_with_state(x, mask, state)
        return (y, new_state) if return_state else y

    def forward_with_state(
        self, x: Tensor, mask: Tensor | None = None, state: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Outputs for x (b, t, i) continuing `state`, and the state after x."""
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        mask = self._check(x, mask, state)
        h, stack = self.stack.run(self.proj(x), state)  # (b, t, d)
        real = mask.unsqueeze(-1).to(h.dtype)  # (b, t, 1)
        lengths = mask.sum(dim=1)  # (b,)
        last = h[torch.arange(h.shape[0], device=h.device), (lengths - 1).clamp(min=0)]  # (b, d)
        new_state = {
            **stack,
            "sum": state["sum"] + (h * real).sum(dim=1),
            "last": torch.where((lengths > 0).unsqueeze(-1), last, state["last"]),
            "count": state["count"] + lengths,
            "closed": ~mask.all(dim=1),
        }
        return self._read(h, real, new_state), new_state

    def step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """One step x_t (b, i) for every row; output (b, o) in every mode."""
        if x_t.ndim != 2:
            raise PulseError(f"SequenceModel.step expects (batch, {self.input_dim}), got {tuple(x_t.shape)}.")
        self._check(x_t.unsqueeze(1), None, state)
        h, stack = self.stack.run_step(self.proj(x_t), state)  # (b, d)
        new_state = {**state, **stack, "sum": state["sum"] + h, "last": h,
                     "count": state["count"] + 1}
        y = self._read(h.unsqueeze(1), torch.ones_like(h[:, :1]).unsqueeze(1), new_state)
        return (y.squeeze(1) if self.output_mode == "all" else y), new_state

    def _read(self, h: Tensor, real: Tensor, state: dict[str, Any]) -> Tensor:
        if self.output_mode == "all":
            return self.head(h) * real  # (b, t, o)
        if h.device.type != "meta" and (state["count"] == 0).any():
            raise PulseError("a row has no real steps (its mask is all false), so it has no last or mean output.")
        if self.output_mode == "last":
            return self.head(state["last"])
        return self.head(state["sum"] / state["count"].clamp(min=1).unsqueeze(-1).to(h.dtype))
