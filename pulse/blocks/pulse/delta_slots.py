"""PULSE slots written by the delta rule: a slot bank that stores key → value associations.

# b batch · t time · d model · h heads · s slots · e = k/h slot width per head · w conv taps
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import decay_parameters, init_decay_
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.delta_rule import delta_rule, recurrent_delta_rule


class DeltaSlotLayer(nn.Module):
    """The PULSE layer with `gate = "delta"`: each token writes into the slots it addresses,
    correcting what they already hold (an error-correcting, key-addressed write).

    The bank holds s slots of width k = h·e; head j of slot i is the vector S[j, i] ∈ ℝ^e. A token
    addresses the slots through their learned keys, per head, and writes a value there:

        a_t, r_t, v_t = silu(conv_w(W_a x)), silu(conv_w(W_r x)), silu(conv_w(W_v x))
        a_t ← a_t/‖a_t‖,  r_t ← r_t/‖r_t‖/√s          (per head: a weight on every slot)
        β_t = σ(w_β·x_t),  α_t = exp(−e^{A_log} · softplus(w_α·x_t + b_Δ))
        S_t = α_t (I − β_t a_t a_tᵀ) S_{t−1} + β_t a_t v_tᵀ   (the bank per head, (s, e))
        o_t = S_tᵀ r_t,   y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    Row i of W_a (per head) is slot i's key: a_t is the token's similarity to every slot, so the
    slots a token writes are chosen by content, and the value read back under an address is
    moved a fraction β_t toward v_t rather than blended in — s slots hold up to ≈ s separate
    pairs per head, where a gated blend of the chunk (gru/lstm/mingru) holds a running summary.
    Every sequence starts with an empty bank: a learned initial bank was tried and stopped MQAR
    from learning at the learning rate where the empty one learns (docs/blocks/pulse.md). This is
    the update of Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024) with the slot index as its key
    space, so it is computed by the same chunkwise WY/UT form (`pulse.ops.delta_rule`, `chunk_size`
    tokens per block — any chunk size gives the same outputs); `step` is the per-token recurrence.

    State: the bank, s·k numbers, and the conv inputs, (w−1)·(2·h·s + k), whatever the length.
    Cost per token: 2·d·(2·h·s + 2·k + 2·h) + 2·k·d (projections) + 2·w·(2·h·s + k) (conv)
    + c·(5·h·s + 3·k) (the chunk) + 6·s·k (state read, correction, write) + 12·(2·h·s + k).
    Params: d·(2·h·s + 2·k + 2·h) + k·d + w·(2·h·s + k) + e + 2·h.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_slots: int = 16,
        slot_dim: int | None = None,
        chunk_size: int = 64,
        num_heads: int = 4,
        conv_size: int = 4,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        k = slot_dim or dim
        if k % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide slot_dim ({k}); pick a divisor of {k}.")
        if num_slots < 1 or chunk_size < 1 or conv_size < 2:
            raise PulseError(
                f"gate \"delta\" needs num_slots ≥ 1, chunk_size ≥ 1 and conv_size ≥ 2 (its short conv hands "
                f"each token its neighbours); got num_slots={num_slots}, chunk_size={chunk_size}, conv_size={conv_size}."
            )
        factory = {"device": device, "dtype": dtype}
        self.dim, self.slot_dim, self.num_heads, self.head_dim = dim, k, num_heads, k // num_heads
        self.max_slots, self.chunk_size, self.conv_size, self.eps = num_slots, chunk_size, conv_size, eps
        self.gate = "delta"
        A = num_heads * num_slots  # address width over all heads
        self.address_width = A
        # one projection for the write and read addresses, values, the output gate, β and the decay input
        self.in_proj = nn.Linear(dim, 2 * A + 2 * k + 2 * num_heads, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(2 * A + k, conv_size, **factory))
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim, **factory))
        self.out_proj = nn.Linear(k, dim, bias=False, **factory)
        self.A_log, self.dt_bias = decay_parameters(num_heads, **factory)
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)
        init_decay_(self.A_log, self.dt_bias, a_min=1e-4)

    @property
    def num_slots(self) -> int:
        return self.max_slots

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.conv_weight.device
        dtype = dtype if dtype is not None else self.conv_weight.dtype
        return {
            "slots": torch.zeros(batch, self.num_heads, self.max_slots, self.head_dim, device=device, dtype=dtype),
            "conv": torch.zeros(batch, self.conv_size - 1, self.conv_weight.shape[0], device=device, dtype=dtype),
        }

    def _check_state(self, state: Any, batch: int) -> None:
        slots = state.get("slots") if isinstance(state, dict) else None
        conv = state.get("conv") if isinstance(state, dict) else None
        if (
            slots is None or conv is None
            or tuple(slots.shape) != (batch, self.num_heads, self.max_slots, self.head_dim)
            or tuple(conv.shape) != (batch, self.conv_size - 1, self.conv_weight.shape[0])
        ):
            raise PulseError(
                f"{type(self).__name__} got a state that does not fit a batch of {batch}; pass the state its "
                "forward or init_state returned."
            )

    def _inputs(self, x: Tensor, conv_state: Tensor) -> tuple[Tensor, ...]:
        """Read and write addresses (b, h, t, s), values (b, h, t, e), β and log α (b, h, t),
        the output gate (b, t, h, e) and the new conv state."""
        b, t, _ = x.shape
        h, A, k = self.num_heads, self.address_width, self.slot_dim
        arv, gate, rest = self.in_proj(x).split((2 * A + k, k, 2 * h), dim=-1)
        arv, conv_state = causal_depthwise_conv(arv, self.conv_weight, None, conv_state)
        read, write, value = F.silu(arv).split((A, A, k), dim=-1)
        read = F.normalize(read.view(b, t, h, -1), dim=-1) / math.sqrt(self.max_slots)
        write = F.normalize(write.view(b, t, h, -1), dim=-1)
        value = value.view(b, t, h, -1)
        beta = torch.sigmoid(rest[..., :h])
        log_decay = -self.A_log.exp() * F.softplus(rest[..., h:] + self.dt_bias)  # (b, t, h), ≤ 0
        read, write, value = (z.transpose(1, 2) for z in (read, write, value))
        return read, write, value, beta.transpose(1, 2), log_decay.transpose(1, 2), gate.view(b, t, h, -1), conv_state

    def _output(self, o: Tensor, gate: Tensor) -> Tensor:
        """o: (b, h, t, e), gate: (b, t, h, e) → (b, t, d)."""
        o = F.rms_norm(o.transpose(1, 2), (self.head_dim,), self.norm_weight, self.eps) * F.silu(gate)
        return self.out_proj(o.flatten(2))

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        self._check_state(state, x.shape[0])
        r, a, v, beta, log_decay, gate, conv_state = self._inputs(x, state["conv"])
        o, slots = delta_rule(r, a, v, beta, log_decay, state["slots"], chunk_size=self.chunk_size)
        return self._output(o, gate), {"slots": slots, "conv": conv_state}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        self._check_state(state, x_t.shape[0])
        r, a, v, beta, log_decay, gate, conv_state = self._inputs(x_t.unsqueeze(1), state["conv"])
        o, slots = recurrent_delta_rule(r, a, v, beta, log_decay, state["slots"])  # one token: the recurrence
        return self._output(o, gate).squeeze(1), {"slots": slots, "conv": conv_state}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, s, k, w = self.dim, self.num_heads, self.max_slots, self.slot_dim, self.conv_size
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (2 * h * s + 2 * k + 2 * h) + 2.0 * k * d
        return proj + 2.0 * w * (2 * h * s + k) + c * (5 * h * s + 3 * k) + 6.0 * s * k + 12.0 * (2 * h * s + k)

    def state_numel(self, seq_len: int) -> int:
        h, s, k = self.num_heads, self.max_slots, self.slot_dim
        return s * k + (self.conv_size - 1) * (2 * h * s + k)

    def param_count(self) -> int:
        d, h, s, k, w = self.dim, self.num_heads, self.max_slots, self.slot_dim, self.conv_size
        return d * (2 * h * s + 2 * k + 2 * h) + k * d + w * (2 * h * s + k) + self.head_dim + 2 * h
