"""Gated update of slot states, then communication among the slots.

# b batch · s slots · d state dim · i input dim · h heads · e head dim
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError, seed_alias

GateType = Literal["gru", "lstm", "mingru"]
GATES: tuple[str, ...] = ("gru", "lstm", "mingru")


def check_gate(gate: str, name: str = "gate") -> None:
    """Raise PulseError unless `gate` is one of GATES."""
    if gate not in GATES:
        raise PulseError(f"unknown {name} `{gate}`; choose one of {', '.join(GATES)}.")

# (input-projection rows, state-projection rows) per gate, in multiples of d
_WIDTHS = {"gru": (3, 3), "lstm": (4, 4), "mingru": (2, 0)}

SlotState = Tensor | tuple[Tensor, Tensor]


class SlotCommunication(nn.Module):
    """h ← LayerNorm(h + W_o · MHA(h)): multi-head attention among the s slots of each sequence.

    Cost: 8·s·d² + 4·s²·d FLOPs per call. Params: 4·d² + 2·d.
    """

    def __init__(self, slot_dim: int, *, num_heads: int = 4, device=None, dtype=None):
        super().__init__()
        if slot_dim % num_heads:
            raise PulseError(
                f"num_heads ({num_heads}) must divide slot_dim ({slot_dim}); pick a divisor of {slot_dim}."
            )
        self.slot_dim, self.num_heads, self.head_dim = slot_dim, num_heads, slot_dim // num_heads
        self.qkv = nn.Linear(slot_dim, 3 * slot_dim, bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(slot_dim, slot_dim, bias=False, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(slot_dim, device=device, dtype=dtype)

    def forward(self, h: Tensor) -> Tensor:  # h: (…, s, d)
        q, k, v = self.qkv(h).unflatten(-1, (3, self.num_heads, self.head_dim)).movedim(-3, 0).transpose(-3, -2)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (…, h, s, e)
        return self.norm(h + self.out(mixed.transpose(-3, -2).flatten(-2)))

    def flops(self, num_slots: int) -> float:
        return 8.0 * num_slots * self.slot_dim**2 + 4.0 * num_slots**2 * self.slot_dim

    def param_count(self) -> int:
        return 4 * self.slot_dim**2 + 2 * self.slot_dim


class StatePropagator(nn.Module):
    """One update of the slots from inputs x: a gate, then (optionally) communication among slots.

    gru:    r = σ(W_r[h;x]), z = σ(W_z[h;x]), ĥ = tanh(W_h[r⊙h; x]), h' = (1−z)h + z ĥ
    lstm:   i,f,o = σ(W_{i,f,o}[h;x]), g = tanh(W_g[h;x]), c' = f⊙c + i⊙g, h' = o⊙tanh(c')  (state (h, c))
    mingru: z = σ(W_z x), ĥ = W_h x, h' = (1−z)h + z ĥ — linear in h, so sequences can be scanned
    then h' ← LayerNorm(h' + MHA(h')) among the slots when communication is on.

    States and inputs are (b, d) or (b, s, d). Cost per slot: 2·k_x·i·d + 2·k_h·d² FLOPs with
    (k_x, k_h) = (3, 3) gru, (4, 4) lstm, (2, 0) mingru, plus communication (8·s·d² + 4·s²·d per call).
    Params: k_x·(i·d + d) + k_h·d², plus 4·d² + 2·d with communication (i = input_dim, default d).
    """

    def __init__(
        self,
        slot_dim: int | None = None,
        *,
        gate: GateType = "gru",
        num_heads: int = 4,
        communication: bool = True,
        input_dim: int | None = None,
        device=None,
        dtype=None,
        state_dim: int | None = None,
        gate_type: GateType | None = None,
        enable_communication: bool | None = None,
    ):
        super().__init__()
        # the seed's names (state_dim, gate_type, enable_communication) are accepted as aliases
        slot_dim = seed_alias("slot_dim", slot_dim, "state_dim", state_dim)
        gate = seed_alias("gate", gate, "gate_type", gate_type, default="gru")
        communication = seed_alias("communication", communication, "enable_communication", enable_communication,
                                   default=True)
        if slot_dim is None:
            raise PulseError("StatePropagator needs slot_dim (the width of each slot), e.g. StatePropagator(128).")
        check_gate(gate, "gate")
        self.slot_dim, self.input_dim, self.gate = slot_dim, input_dim or slot_dim, gate
        kx, kh = _WIDTHS[gate]
        self.w_x = nn.Linear(self.input_dim, kx * slot_dim, bias=True, device=device, dtype=dtype)
        if gate == "gru":
            self.w_h = nn.Linear(slot_dim, 2 * slot_dim, bias=False, device=device, dtype=dtype)
            self.w_hh = nn.Linear(slot_dim, slot_dim, bias=False, device=device, dtype=dtype)
        elif gate == "lstm":
            self.w_h = nn.Linear(slot_dim, 4 * slot_dim, bias=False, device=device, dtype=dtype)
            with torch.no_grad():
                # forget gate starts mostly open, so slots keep their content early in training
                self.w_x.bias[slot_dim : 2 * slot_dim].fill_(1.0)
        self.communication = (
            SlotCommunication(slot_dim, num_heads=num_heads, device=device, dtype=dtype) if communication else None
        )

    def init_cell(self, h: Tensor) -> Tensor:
        """The LSTM cell state that goes with fresh slots h: zeros."""
        return torch.zeros_like(h)

    def update(self, state: SlotState, x: Tensor) -> SlotState:
        """The gated update alone; lstm takes and returns (h, c), the others a tensor h."""
        state = self._check_state(state, x)
        h = state[0] if self.gate == "lstm" else state
        return self.combine(state, self.w_x(x), self.w_h(h) if self.gate != "mingru" else None)

    def _check_state(self, state: SlotState, x: Tensor) -> SlotState:
        """The state in the gate's form, or a PulseError saying what to pass.

        A plain tensor given to an lstm gate is its h, with a zero cell (a fresh LSTM).
        """
        if self.gate == "lstm" and isinstance(state, Tensor):
            state = (state, self.init_cell(state))
        h = state[0] if isinstance(state, tuple) else state
        if self.gate != "lstm" and isinstance(state, tuple):
            raise PulseError(f"a {self.gate} propagator takes the slots h as one tensor, got a tuple; pass h alone.")
        if not isinstance(h, Tensor) or h.shape[-1] != self.slot_dim:
            got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise PulseError(
                f"StatePropagator(slot_dim={self.slot_dim}) needs slots of shape (…, {self.slot_dim}), got {got}."
            )
        if not isinstance(x, Tensor) or x.shape[-1] != self.input_dim or x.shape[:-1] != h.shape[:-1]:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise PulseError(
                f"StatePropagator inputs must have shape {(*h.shape[:-1], self.input_dim)} (the slots' leading "
                f"dims, then input_dim={self.input_dim}), got {got}."
            )
        if self.gate == "lstm" and state[1].shape != h.shape:
            raise PulseError(
                f"the lstm cell state must have the slots' shape {tuple(h.shape)}, got {tuple(state[1].shape)}."
            )
        return state

    def combine(self, state: SlotState, xs: Tensor, hs: Tensor | None) -> SlotState:
        """The gate from its projections: xs = W_x x + b (…, k_x·d) and hs = W_h h (…, k_h'·d; None for mingru).

        Split out so a caller that obtains xs and hs from fused matmuls shares this gate math.
        """
        d = self.slot_dim
        if self.gate == "lstm":
            h, c = state
            pre = xs + hs
            ifo = torch.sigmoid(pre[..., : 3 * d])
            i, f, o = ifo.chunk(3, dim=-1)
            c = torch.addcmul(f * c, i, torch.tanh(pre[..., 3 * d :]))
            return o * torch.tanh(c), c
        h = state
        if self.gate == "mingru":
            z, cand = xs.chunk(2, dim=-1)
            return torch.lerp(h, cand, torch.sigmoid(z))
        r, z = torch.sigmoid(xs[..., : 2 * d] + hs).chunk(2, dim=-1)
        cand = torch.tanh(xs[..., 2 * d :] + self.w_hh(r * h))
        return torch.lerp(h, cand, z)

    def mingru_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(gate logits g, candidate ĥ) of the mingru gate for inputs x (…, i); z = σ(g)."""
        if self.gate != "mingru":
            raise PulseError(f"mingru_parts needs gate='mingru', this propagator uses `{self.gate}`.")
        g, cand = self.w_x(x).chunk(2, dim=-1)
        return g, cand

    def communicate(self, h: Tensor) -> Tensor:
        """Communication among the slots of h (…, s, d), or h itself when it is off; (b, d) is one slot."""
        if self.communication is None:
            return h
        if h.ndim == 2:
            return self.communication(h.unsqueeze(-2)).squeeze(-2)
        return self.communication(h)

    def forward(self, state: SlotState, x: Tensor) -> SlotState:
        """Gate, then communication among the slots. An lstm gate returns (h, c); given a plain
        tensor h it starts from a zero cell."""
        if self.gate == "lstm":
            h, c = self.update(state, x)
            return self.communicate(h), c
        return self.communicate(self.update(state, x))

    def flops(self, num_slots: int, *, communication: bool = True) -> float:
        """Forward FLOPs of one update of num_slots slots (communication included when on and asked for)."""
        kx, kh = _WIDTHS[self.gate]
        gate = num_slots * (2.0 * kx * self.input_dim * self.slot_dim + 2.0 * kh * self.slot_dim**2)
        comm = self.communication.flops(num_slots) if communication and self.communication is not None else 0.0
        return gate + comm

    def param_count(self) -> int:
        kx, kh = _WIDTHS[self.gate]
        comm = self.communication.param_count() if self.communication is not None else 0
        return kx * (self.input_dim * self.slot_dim + self.slot_dim) + kh * self.slot_dim**2 + comm
