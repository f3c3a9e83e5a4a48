"""RWKV-7 ("Goose") time mixing: a state transition that is a diagonal decay plus a rank-one removal.

# b batch · t time · d model · h heads · e = d/h head width · r_w, r_a, r_g low-rank widths
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input, no_weight_decay
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask
from pulse.ops.generalized_delta import generalized_delta, recurrent_generalized_delta

_DECAY_SCALE = math.exp(-0.5)  # w_t = exp(−e^{−½} σ(·)): every step keeps at least e^{−0.61} of each channel


class RWKV7(nn.Module):
    """RWKV-7 time mixing (Peng et al. 2025), per head a state S ∈ ℝ^{e×e} (keys × values):

        x̄_t = x_{t−1} (0 at a sequence or document start);  x^• = x + (x̄ − x) ⊙ μ_•  for • ∈ r, w, k, v, a, g
        r, k, v = W_r x^r, W_k x^k, W_v x^v
        w_t = exp(−e^{−½} σ(w₀ + tanh(x^w A_w) B_w))          (per channel decay, in (0.54, 1))
        a_t = σ(a₀ + x^a A_a B_a)                              (in-context learning rate, per channel)
        g_t = σ(x^g A_g) B_g                                   (output gate)
        κ̂_t = normalise(k ⊙ κ) per head,   k ← k ⊙ (1 + (a − 1) ⊙ κ_a)
        S_t = (Diag(w_t) − (κ̂_t ⊙ a_t) κ̂_tᵀ) S_{t−1} + k_t v_tᵀ     (RWKV's v × k layout, transposed)
        o_t = groupnorm_h(S_tᵀ r_t) + (Σ_e r ⊙ k ⊙ ρ) v_t,   y_t = W_o (o_t ⊙ g_t)

    The rank-one term removes, along the normalised removal key κ̂, a fraction a of what the state
    holds there before the new pair is written (a delta rule with a per-channel learning rate and a
    per-channel decay). It runs on the generalized delta rule (`pulse.ops.generalized_delta`:
    a = κ̂ ⊙ a_t, b = −κ̂, w as above), chunkwise in `forward`, token by token in `step`. The
    value residual of the RWKV-7 paper (every layer mixing in the first layer's values) needs state
    across layers and is left out: each block stands alone, as the contract asks.

    State: S, h·e² = d·e numbers, and the previous token x̄, d numbers, whatever the length.
    Cost per token: 8·d² (r, k, v, o) + 4·d·(r_w + r_a + r_g) (low-rank maps) + 12·d (token shift)
    + c·14·d (the chunk: pair sums, solve, reads) + 8·d·e (state read, transition, write) + 30·d.
    Params: 4·d² + 2·d·(r_w + r_a + r_g) + 13·d.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        decay_rank: int = 32,
        iclr_rank: int = 32,
        gate_rank: int = 64,
        chunk_size: int = 32,
        eps: float = 64e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide dim ({dim}); pick a divisor of {dim}.")
        if min(decay_rank, iclr_rank, gate_rank, chunk_size) < 1:
            raise PulseError("decay_rank, iclr_rank, gate_rank and chunk_size must all be ≥ 1, got "
                             f"{decay_rank}, {iclr_rank}, {gate_rank}, {chunk_size}.")
        factory = {"device": device, "dtype": dtype}
        d = dim
        self.dim, self.num_heads, self.head_dim, self.chunk_size, self.eps = d, num_heads, d // num_heads, \
            chunk_size, eps
        self.ranks = (decay_rank, iclr_rank, gate_rank)
        self.mix = nn.Parameter(torch.empty(6, d, **factory))  # μ for r, w, k, v, a, g
        self.receptance = nn.Linear(d, d, bias=False, **factory)
        self.key = nn.Linear(d, d, bias=False, **factory)
        self.value = nn.Linear(d, d, bias=False, **factory)
        self.output = nn.Linear(d, d, bias=False, **factory)
        self.w0 = no_weight_decay(nn.Parameter(torch.empty(d, **factory)))
        self.w1, self.w2 = nn.Parameter(torch.empty(d, decay_rank, **factory)), \
            nn.Parameter(torch.empty(decay_rank, d, **factory))
        self.a0 = no_weight_decay(nn.Parameter(torch.zeros(d, **factory)))
        self.a1, self.a2 = nn.Parameter(torch.empty(d, iclr_rank, **factory)), \
            nn.Parameter(torch.empty(iclr_rank, d, **factory))
        self.g1, self.g2 = nn.Parameter(torch.empty(d, gate_rank, **factory)), \
            nn.Parameter(torch.empty(gate_rank, d, **factory))
        self.k_k = no_weight_decay(nn.Parameter(torch.full((d,), 0.85, **factory)))
        self.k_a = no_weight_decay(nn.Parameter(torch.ones(d, **factory)))
        self.r_k = nn.Parameter(torch.empty(d, **factory))
        self.norm_weight = nn.Parameter(torch.ones(d, **factory))
        self.norm_bias = nn.Parameter(torch.zeros(d, **factory))
        with torch.no_grad():
            ramp = torch.arange(d, **factory) / max(d - 1, 1)
            for i, power in enumerate((0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):  # how much of x̄ each stream mixes in
                self.mix[i].copy_(1 - ramp.clamp(min=1e-3) ** power)
            self.w0.copy_(-6 + 5 * ramp**0.85)  # slow-to-fast decays across channels
            for m in (self.w1, self.a1, self.g1):
                nn.init.uniform_(m, -(d**-0.5), d**-0.5)
            for m in (self.w2, self.a2, self.g2):
                nn.init.normal_(m, std=0.1 / math.sqrt(m.shape[0]))
            nn.init.normal_(self.r_k, std=0.1)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.mix.device
        dtype = dtype if dtype is not None else self.mix.dtype
        h, e = self.num_heads, self.head_dim
        return {"shift": torch.zeros(batch, self.dim, device=device, dtype=dtype),
                "kv": torch.zeros(batch, h, e, e, device=device, dtype=dtype)}

    def _check_state(self, state: Any, batch: int) -> None:
        shift, kv = (state.get(n) if isinstance(state, dict) else None for n in ("shift", "kv"))
        if not isinstance(shift, Tensor) or not isinstance(kv, Tensor) or tuple(shift.shape) != (batch, self.dim) \
                or tuple(kv.shape) != (batch, self.num_heads, self.head_dim, self.head_dim):
            raise PulseError(f"RWKV7 got a state that does not fit a batch of {batch}; pass the state its forward "
                             "or init_state returned.")

    def _streams(self, x: Tensor, shift: Tensor, resets: Tensor | None) -> tuple[Tensor, ...]:
        """q (= r), the write k, v, a, b, log w (b, h, t, e), the bonus (b, t, d), the gate and the new shift."""
        b, t, d = x.shape
        h, e = self.num_heads, self.head_dim
        prev = torch.cat((shift.unsqueeze(1), x[:, :-1]), dim=1)  # x̄
        if resets is not None:
            prev = prev.masked_fill(resets.unsqueeze(-1), 0)  # a document starts with nothing before it
        xr, xw, xk, xv, xa, xg = (x + (prev - x) * mu for mu in self.mix)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        log_w = -_DECAY_SCALE * torch.sigmoid(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        removal = F.normalize((k * self.k_k).view(b, t, h, e), dim=-1).view(b, t, d)
        k = k * (1 + (a - 1) * self.k_a)
        bonus = ((r * k * self.r_k).view(b, t, h, e).sum(-1, keepdim=True) * v.view(b, t, h, e)).view(b, t, d)
        heads = lambda z: z.view(b, t, h, e).transpose(1, 2)  # noqa: E731
        return (heads(r), heads(k), heads(v), heads(removal * a), heads(-removal), heads(log_w), bonus, g,
                x[:, -1])

    def _output(self, o: Tensor, bonus: Tensor, g: Tensor) -> Tensor:
        b, _, t, _ = o.shape
        o = o.transpose(1, 2).reshape(b * t, self.dim)
        o = F.group_norm(o, self.num_heads, self.norm_weight, self.norm_bias, self.eps).view(b, t, self.dim)
        return self.output((o + bonus) * g)

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        self._check_state(state, x.shape[0])
        resets = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)
        q, k, v, a, bb, log_w, bonus, g, shift = self._streams(x, state["shift"], resets)
        o, kv = generalized_delta(q, k, v, a, bb, log_w, state["kv"], resets, chunk_size=self.chunk_size)
        return self._output(o, bonus, g), {"shift": shift, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        self._check_state(state, x_t.shape[0])
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        if rows is not None:
            state = reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)
        q, k, v, a, bb, log_w, bonus, g, shift = self._streams(x_t.unsqueeze(1), state["shift"], None)
        o, kv = recurrent_generalized_delta(q, k, v, a, bb, log_w, state["kv"])  # one token: the recurrence
        return self._output(o, bonus, g).squeeze(1), {"shift": shift, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, e = self.dim, self.head_dim
        c = max(1, min(self.chunk_size, seq_len))
        return 8.0 * d * d + 4.0 * d * sum(self.ranks) + 12.0 * d + c * 14.0 * d + 8.0 * d * e + 30.0 * d

    def state_numel(self, seq_len: int) -> int:
        return self.dim * self.head_dim + self.dim

    def param_count(self) -> int:
        d = self.dim
        return 4 * d * d + 2 * d * sum(self.ranks) + 13 * d
