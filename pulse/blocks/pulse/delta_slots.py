"""PULSE slots written by the delta rule: a slot bank that stores key → value associations.

# b batch · t time · d model · h heads · s slots · e = k/h slot width per head · w conv taps
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch
from torch import Tensor

from pulse.blocks.mixers.deltanet import GatedDeltaNet
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, starts_mask


class DeltaSlotLayer(GatedDeltaNet):
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
    from learning at the learning rate where the empty one learns (docs/blocks/pulse.md).

    This is Gated DeltaNet's recurrence (Yang, Kautz & Hatamizadeh 2024) with the slot index as its
    key space — `GatedDeltaNet` with head_dim = s and value width e per head — so it is that class,
    sized by slots: the same chunkwise WY/UT form (`pulse.ops.delta_rule`, `chunk_size` tokens per
    block — any chunk size gives the same outputs), `step` the per-token recurrence, state
    {"conv", "kv"} with the bank in "kv" as (b, h, s, e).

    State: the bank, s·k numbers, and the conv inputs, (w−1)·(2·h·s + k), whatever the length.
    Cost per token: 2·d·(2·h·s + 2·k + 2·h) + 2·k·d (projections) + 2·w·(2·h·s + k) (conv)
    + c·(5·h·s + 3·k) (the chunk) + 6·s·k (state read, correction, write) + 12·(2·h·s + k).
    Params: d·(2·h·s + 2·k + 2·h) + k·d + w·(2·h·s + k) + e + 2·h.

    `capture_sink`, when set (by pulse.visualization.capture), is called with "slots" (b, n, s, k):
    the bank each chunk of `chunk_size` tokens started from, slot i being its rows of every head
    side by side. To report it the forward runs a chunk at a time (the same outputs, by the
    split property every mixer has); unset (the default) it costs one attribute test.
    """

    capture_sink: Callable[[str, Tensor], None] | None = None

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
        k = slot_dim or dim
        if k % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide slot_dim ({k}); pick a divisor of {k}.")
        if num_slots < 1 or chunk_size < 1 or conv_size < 2:
            raise PulseError(
                f"gate \"delta\" needs num_slots ≥ 1, chunk_size ≥ 1 and conv_size ≥ 2 (its short conv hands "
                f"each token its neighbours); got num_slots={num_slots}, chunk_size={chunk_size}, "
                f"conv_size={conv_size}."
            )
        # an exact ratio, so head_dim · expand_v is the whole value width e = k/h
        super().__init__(dim, num_heads=num_heads, head_dim=num_slots, expand_v=Fraction(k // num_heads, num_slots),
                         conv_size=conv_size, chunk_size=chunk_size, eps=eps, device=device, dtype=dtype)
        self.slot_dim, self.max_slots, self.gate = k, num_slots, "delta"

    @property
    def num_slots(self) -> int:
        return self.max_slots

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.capture_sink is None or x.ndim != 3 or x.shape[1] == 0:
            return super().forward(x, state, doc_starts=doc_starts)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        mask = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)
        outs, banks = [], []
        for start in range(0, x.shape[1], self.chunk_size):
            banks.append(self.slots(state))
            part = slice(start, start + self.chunk_size)
            y, state = super().forward(x[:, part], state, doc_starts=None if mask is None else mask[:, part])
            outs.append(y)
        self.capture_sink("slots", torch.stack(banks, dim=1).detach())
        return torch.cat(outs, dim=1), state

    @staticmethod
    def slots(state: dict[str, Tensor]) -> Tensor:
        """The bank of a state as slots (b, s, k): slot i is row i of every head, heads side by side."""
        kv = state["kv"]  # (b, h, s, e)
        return kv.permute(0, 2, 1, 3).flatten(2)
