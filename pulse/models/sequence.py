"""Models over continuous inputs: SimplePulse (one vector → classes) and SequencePulse
(a sequence → one output, or one per step), both built from PULSE's parts.

# b batch · t time · i input features · d model · s slots · o outputs
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pulse.blocks.pulse.propagator import StatePropagator
from pulse.blocks.pulse.router import TokenToStateRouter
from pulse.errors import PulseError

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
        state_dim: int,
        num_states: int,
        output_dim: int,
        *,
        gate_type: str = "gru",
        num_iterations: int = 3,
        num_heads: int = 4,
        communication: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_iterations < 1:
            raise PulseError(f"num_iterations must be ≥ 1, got {num_iterations}.")
        factory = {"device": device, "dtype": dtype}
        self.input_dim, self.state_dim, self.num_states, self.output_dim = input_dim, state_dim, num_states, output_dim
        self.num_iterations = num_iterations
        self.slots = nn.Parameter(torch.randn(num_states, state_dim, **factory) * state_dim**-0.5)
        self.feature_scale = nn.Parameter(torch.randn(input_dim, state_dim, **factory) * state_dim**-0.5)
        self.feature_bias = nn.Parameter(torch.randn(input_dim, state_dim, **factory) * state_dim**-0.5)
        self.router = TokenToStateRouter(state_dim, num_heads=num_heads, **factory)
        self.propagator = StatePropagator(
            state_dim, gate_type=gate_type, num_heads=num_heads, enable_communication=communication, **factory
        )
        self.norm = nn.LayerNorm(state_dim, **factory)
        self.head = nn.Linear(state_dim, output_dim, **factory)

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
        state = (h, self.propagator.init_cell(h)) if self.propagator.gate_type == "lstm" else h
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
        d, s, i = self.state_dim, self.num_states, self.input_dim
        per_iteration = self.router.flops(s, i) + self.propagator.flops(s)
        return 2.0 * i * d + self.num_iterations * per_iteration + 2.0 * d * self.output_dim

    def state_numel(self, seq_len: int = 1) -> int:
        lstm = self.propagator.gate_type == "lstm"
        return self.num_states * self.state_dim * (2 if lstm else 1)

    def param_count(self) -> int:
        d, s, i, o = self.state_dim, self.num_states, self.input_dim, self.output_dim
        return s * d + 2 * i * d + self.router.param_count() + self.propagator.param_count() + 2 * d + d * o + o


class SequencePulse(nn.Module):
    """Encoder: x (b, t, i) → W_in x → residual layers (any registered mixers) → norm → head.

    output_mode 'last' gives head(h) at each row's last real step (b, o); 'all' gives
    head(h) at every step (b, t, o), zero at padded steps; 'mean' gives head of the
    mean of h over the real steps seen so far (b, o). The running sum, count and last
    step travel in the state, so feeding a sequence in pieces (state carried) gives
    the same output as one pass, and — with causal layers — the output after a prefix
    depends only on that prefix: 'mean' is a causal-safe running mean. With
    bidirectional layers only the final output of a whole sequence is meaningful.

    `mask` (b, t), true at real steps, must be right padding (each row a run of real
    steps, then padding). Padded steps change nothing: causal layers never let them
    reach a real step, and the pooled outputs skip them. A row that ends in padding
    is finished; its state cannot be continued.

    Build it from sizes, `SequencePulse(input_dim, state_dim, num_states, output_dim,
    layout=("pulse",), …)` — the model width is `state_dim` — or from a recipe with
    `[model] kind = "sequence_pulse"` (its builder passes ready `layers`, `final_norm` and
    `positions`, and the size arguments that shape layers are then unused).
    Params: i·d + d (input) + layers + d·o + o (head).
    """

    def __init__(
        self,
        input_dim: int,
        state_dim: int,
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
        layers: Sequence[nn.Module] | None = None,
        final_norm: nn.Module | None = None,
        positions: nn.Module | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if output_mode not in OUTPUT_MODES:
            raise PulseError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}.")
        if layers is None:
            from pulse.assemble import make_spec
            from pulse.assemble.context import BuildContext
            from pulse.assemble.models import sequence_parts
            from pulse.specs.models import seed_mixers

            mixers = seed_mixers(layout, {"num_states": num_states, "num_heads": num_heads, "chunk_size": chunk_size,
                                          "gate_type": gate_type})
            spec = make_spec(
                "sequence_pulse", "model", input_dim=input_dim, output_dim=output_dim, output_mode=output_mode,
                dim=state_dim, depth=num_layers, layout=list(layout), mixers=mixers,
                mlp={"kind": mlp} if mlp else None, norm={"kind": norm},
            )
            layers, final_norm, positions = sequence_parts(spec, BuildContext(state_dim, device, dtype))
        elif final_norm is None:
            raise PulseError("SequencePulse built from ready layers needs `final_norm` too.")
        self.input_dim, self.dim, self.output_dim, self.output_mode = input_dim, state_dim, output_dim, output_mode
        self.proj = nn.Linear(input_dim, state_dim, device=device, dtype=dtype)
        self.positions = positions
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.head = nn.Linear(state_dim, output_dim, device=device, dtype=dtype)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.proj.weight.device
        dtype = dtype if dtype is not None else self.proj.weight.dtype
        zeros = torch.zeros(batch, self.dim, device=device, dtype=dtype)
        return {
            "pos": 0,
            "layers": [layer.mixer.init_state(batch, device=device, dtype=dtype) for layer in self.layers],
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
                f"SequencePulse expects float inputs of shape (batch, time ≥ 1, {self.input_dim}), "
                f"got {tuple(x.shape)} {x.dtype}."
            )
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise PulseError(f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {tuple(mask.shape)} {mask.dtype}.")
        if x.device.type == "meta":
            return mask
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise PulseError("mask must be right padding: in each row the real steps come first, then only padding.")
        if state["closed"].any():
            rows = state["closed"].nonzero().flatten().tolist()
            raise PulseError(f"rows {rows[:8]} ended with padding in an earlier call; a padded sequence cannot be continued.")
        return mask

    def forward(
        self, x: Tensor, mask: Tensor | None = None, state: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Outputs for x (b, t, i) — (b, o), or (b, t, o) with output_mode 'all' — and the state after x."""
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        mask = self._check(x, mask, state)
        h = self.proj(x)  # (b, t, d)
        if self.positions is not None:
            h = self.positions(h, offset=state["pos"])
        layer_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            h, s = layer(h, s)
            layer_states.append(s)
        h = self.final_norm(h)
        real = mask.unsqueeze(-1).to(h.dtype)  # (b, t, 1)
        lengths = mask.sum(dim=1)  # (b,)
        last = h[torch.arange(h.shape[0], device=h.device), (lengths - 1).clamp(min=0)]  # (b, d)
        new_state = {
            "pos": state["pos"] + x.shape[1],
            "layers": layer_states,
            "sum": state["sum"] + (h * real).sum(dim=1),
            "last": torch.where((lengths > 0).unsqueeze(-1), last, state["last"]),
            "count": state["count"] + lengths,
            "closed": ~mask.all(dim=1),
        }
        return self._read(h, real, new_state), new_state

    def step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """One step x_t (b, i) for every row; output (b, o) in every mode."""
        if x_t.ndim != 2:
            raise PulseError(f"SequencePulse.step expects (batch, {self.input_dim}), got {tuple(x_t.shape)}.")
        self._check(x_t.unsqueeze(1), None, state)
        h = self.proj(x_t)  # (b, d)
        if self.positions is not None:
            h = self.positions(h.unsqueeze(1), offset=state["pos"]).squeeze(1)
        layer_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            h, s = layer.step(h, s)
            layer_states.append(s)
        h = self.final_norm(h)
        new_state = {**state, "pos": state["pos"] + 1, "layers": layer_states, "sum": state["sum"] + h, "last": h,
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
