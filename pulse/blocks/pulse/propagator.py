"""Gated update of slot states, then communication among the slots.

# b batch · s slots · d state dim · i input dim · h heads · e head dim
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError

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

    def __init__(self, state_dim: int, *, num_heads: int = 4, device=None, dtype=None):
        super().__init__()
        if state_dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide state_dim ({state_dim}); pick a divisor of {state_dim}.")
        self.state_dim, self.num_heads, self.head_dim = state_dim, num_heads, state_dim // num_heads
        self.qkv = nn.Linear(state_dim, 3 * state_dim, bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(state_dim, state_dim, bias=False, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(state_dim, device=device, dtype=dtype)

    def forward(self, h: Tensor) -> Tensor:  # h: (…, s, d)
        q, k, v = self.qkv(h).unflatten(-1, (3, self.num_heads, self.head_dim)).movedim(-3, 0).transpose(-3, -2)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (…, h, s, e)
        return self.norm(h + self.out(mixed.transpose(-3, -2).flatten(-2)))

    def flops(self, num_slots: int) -> float:
        return 8.0 * num_slots * self.state_dim**2 + 4.0 * num_slots**2 * self.state_dim

    def param_count(self) -> int:
        return 4 * self.state_dim**2 + 2 * self.state_dim


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
        state_dim: int,
        *,
        gate_type: GateType = "gru",
        num_heads: int = 4,
        enable_communication: bool = True,
        input_dim: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_gate(gate_type, "gate_type")
        self.state_dim, self.input_dim, self.gate_type = state_dim, input_dim or state_dim, gate_type
        kx, kh = _WIDTHS[gate_type]
        self.w_x = nn.Linear(self.input_dim, kx * state_dim, bias=True, device=device, dtype=dtype)
        if gate_type == "gru":
            self.w_h = nn.Linear(state_dim, 2 * state_dim, bias=False, device=device, dtype=dtype)
            self.w_hh = nn.Linear(state_dim, state_dim, bias=False, device=device, dtype=dtype)
        elif gate_type == "lstm":
            self.w_h = nn.Linear(state_dim, 4 * state_dim, bias=False, device=device, dtype=dtype)
            with torch.no_grad():
                # forget gate starts mostly open, so slots keep their content early in training
                self.w_x.bias[state_dim : 2 * state_dim].fill_(1.0)
        self.communication = (
            SlotCommunication(state_dim, num_heads=num_heads, device=device, dtype=dtype) if enable_communication else None
        )

    def init_cell(self, h: Tensor) -> Tensor:
        """The LSTM cell state that goes with fresh slots h: zeros."""
        return torch.zeros_like(h)

    def gate(self, state: SlotState, x: Tensor) -> SlotState:
        """The gated update alone; lstm takes and returns (h, c), the others a tensor h."""
        h = state[0] if self.gate_type == "lstm" else state
        return self.combine(state, self.w_x(x), self.w_h(h) if self.gate_type != "mingru" else None)

    def combine(self, state: SlotState, xs: Tensor, hs: Tensor | None) -> SlotState:
        """The gate from its projections: xs = W_x x + b (…, k_x·d) and hs = W_h h (…, k_h'·d; None for mingru).

        Split out so a caller that obtains xs and hs from fused matmuls shares this gate math.
        """
        d = self.state_dim
        if self.gate_type == "lstm":
            h, c = state
            pre = xs + hs
            ifo = torch.sigmoid(pre[..., : 3 * d])
            i, f, o = ifo.chunk(3, dim=-1)
            c = torch.addcmul(f * c, i, torch.tanh(pre[..., 3 * d :]))
            return o * torch.tanh(c), c
        h = state
        if self.gate_type == "mingru":
            z, cand = xs.chunk(2, dim=-1)
            return torch.lerp(h, cand, torch.sigmoid(z))
        r, z = torch.sigmoid(xs[..., : 2 * d] + hs).chunk(2, dim=-1)
        cand = torch.tanh(xs[..., 2 * d :] + self.w_hh(r * h))
        return torch.lerp(h, cand, z)

    def mingru_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(gate logits g, candidate ĥ) of the mingru gate for inputs x (…, i); z = σ(g)."""
        if self.gate_type != "mingru":
            raise PulseError(f"mingru_parts needs gate_type='mingru', this propagator uses `{self.gate_type}`.")
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
        """Gate, then communication among the slots."""
        if self.gate_type == "lstm":
            h, c = self.gate(state, x)
            return self.communicate(h), c
        return self.communicate(self.gate(state, x))

    def flops(self, num_slots: int, *, communication: bool = True) -> float:
        """Forward FLOPs of one update of num_slots slots (communication included when on and asked for)."""
        kx, kh = _WIDTHS[self.gate_type]
        gate = num_slots * (2.0 * kx * self.input_dim * self.state_dim + 2.0 * kh * self.state_dim**2)
        comm = self.communication.flops(num_slots) if communication and self.communication is not None else 0.0
        return gate + comm

    def param_count(self) -> int:
        kx, kh = _WIDTHS[self.gate_type]
        comm = self.communication.param_count() if self.communication is not None else 0
        return kx * (self.input_dim * self.state_dim + self.state_dim) + kh * self.state_dim**2 + comm
