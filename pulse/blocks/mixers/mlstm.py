"""mLSTM: xLSTM's matrix-memory LSTM layer, as Transformers' `xlstm` model (xLSTM-7B) builds it.

# b batch · t time · d model · h heads · k query/key head dim · v value head dim · c chunk length
# K = h·k, V = h·v (query/key and value widths over all heads)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask
from pulse.ops.mlstm import chunk_mlstm, initial_state, mlstm_step


class MLSTM(nn.Module):
    """The mLSTM layer (Beck et al. 2024, "xLSTM"; the xLSTM-7B layer of Beck et al. 2025), per head:

        q, k, v, o = W_q x, W_k x, W_v x, W_o x;   ĩ, f̃' = cap·tanh((W_if x + b_if)/cap)   (soft cap, per head)
        f̃ = log σ(f̃'),  m_t = max(f̃_t + m_{t−1}, ĩ_t)
        C_t = e^{f̃_t + m_{t−1} − m_t} C_{t−1} + e^{ĩ_t − m_t} k_t v_tᵀ,   n_t = (same gates) n_{t−1} + e^{ĩ_t − m_t} k_t
        h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + ε),   q̂ = q/√k
        y_t = W_out (σ(o_t) ⊙ γ ⊙ layernorm_per_head(h_t))          (no bias in the norm; γ over all V channels)

    A matrix memory C ∈ ℝ^{k×v} written with an exponential input gate and a sigmoid forget gate, read by a
    query and divided by the normaliser n (the sum of the keys written, gated alike), stabilised by the
    running max m so no exponential overflows (`pulse.ops.mlstm`). No convolution and no up-projection:
    the layer maps x straight to q, k, v and the output gate, as xLSTM-7B does. Computed chunkwise
    (`chunk_mlstm`, `chunk_size` tokens at once); `step` is the recurrence (`mlstm_step`).

    Transformers' `xLSTMLayer` (weight_mode "fused", use_bias false) ↔ this block, weight for weight:
    `qkv_opreact` ↔ `qkvo_proj` (rows: q, k, v, o; with weight_mode "single", cat q, k, v, ogate_preact),
    `ifgate_preact` ↔ `gate_proj` (rows i then f; "single": cat igate_preact, fgate_preact, and their biases),
    `multihead_norm.weight` ↔ `norm_weight`, `out_proj` ↔ `out_proj`; config num_heads = h,
    qk_dim_factor · hidden_size = K (head_dim = K/h), v_dim_factor / qk_dim_factor = expand_v,
    gate_soft_cap, eps, norm_eps, chunk_size as named here. The state (C, n, m) is theirs with m of shape
    (b, h) instead of (b, h, 1). tests/test_mlstm.py holds the block to their layer with weights copied.

    State: C, n and m, h·(k·(v + 1) + 1) numbers, whatever the length.
    Cost per token: 2·d·(2K + 3V + 2h) (projections) + 2·c·(K + V) + 6·c·h (the chunk's scores, weights
    and reads) + 6·h·k·(v + 1) (state read, chunk-end write, carry) + 12·V (norm, gates);
    O(n·(d·(K + V) + c·(K + V) + h·k·v)) for n tokens.
    Params: d·(2K + 3V + 2h) + 2h + V.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        head_dim: int = 32,
        expand_v: float = 2.0,
        chunk_size: int = 64,
        gate_soft_cap: float | None = 15.0,
        eps: float = 1e-6,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ):
        super().__init__()
        head_v = head_dim * expand_v
        if num_heads < 1 or head_dim < 1 or chunk_size < 1 or head_v != int(head_v) or head_v < 1:
            raise PulseError(
                f"MLSTM needs num_heads, head_dim and chunk_size ≥ 1 and head_dim · expand_v a whole number ≥ 1; "
                f"got num_heads={num_heads}, head_dim={head_dim}, chunk_size={chunk_size}, "
                f"head_dim · expand_v={head_v}."
            )
        if gate_soft_cap is not None and not gate_soft_cap > 0:
            raise PulseError(f"MLSTM's gate_soft_cap must be > 0 or None (no cap), got {gate_soft_cap}.")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim, self.head_v = dim, num_heads, head_dim, int(head_v)
        self.chunk_size, self.gate_soft_cap, self.eps, self.norm_eps = chunk_size, gate_soft_cap, eps, norm_eps
        K, V = num_heads * head_dim, num_heads * self.head_v
        self.key_width, self.value_width = K, V
        self.qkvo_proj = nn.Linear(dim, 2 * K + 2 * V, bias=False, **factory)
        self.gate_proj = nn.Linear(dim, 2 * num_heads, bias=True, **factory)  # ĩ then f̃'
        self.norm_weight = nn.Parameter(torch.empty(V, **factory))
        self.out_proj = nn.Linear(V, dim, bias=False, **factory)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """xLSTM-7B's initialisation (Transformers' `xLSTMPreTrainedModel._init_weights`): projections normal with
        std √(2/(5d)) ("small init"; out_proj too, as the block does not know the depth its wang init needs), gate
        weights zero, input-gate bias −10, forget-gate bias from 3 to 6 over the heads, norm weight 1."""
        h = self.num_heads
        nn.init.normal_(self.qkvo_proj.weight, std=math.sqrt(2 / (5 * self.dim)))
        nn.init.normal_(self.out_proj.weight, std=math.sqrt(2 / (5 * self.dim)))
        nn.init.zeros_(self.gate_proj.weight)
        self.gate_proj.bias[:h] = -10.0
        bias = self.gate_proj.bias
        bias[h:] = torch.linspace(3.0, 6.0, h, device=bias.device, dtype=bias.dtype)
        nn.init.ones_(self.norm_weight)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.norm_weight.device
        dtype = dtype if dtype is not None else self.norm_weight.dtype
        C, n, m = initial_state(batch, self.num_heads, self.head_dim, self.head_v, device=device, dtype=dtype)
        return {"C": C, "n": n, "m": m}

    def _check_state(self, state: object, batch: int) -> None:
        h, k, v = self.num_heads, self.head_dim, self.head_v
        want = {"C": (batch, h, k, v), "n": (batch, h, k), "m": (batch, h)}
        if not isinstance(state, dict) or any(
            not isinstance(state.get(name), Tensor) or tuple(state[name].shape) != shape for name, shape in want.items()
        ):
            raise PulseError(
                f"MLSTM got a state that does not fit a batch of {batch}; pass the state its forward or init_state "
                "returned."
            )

    def _inputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """q, k (b, h, t, k), v (b, h, t, v), log input and log forget gates (b, h, t), output gate (b, t, V)."""
        b, t, _ = x.shape
        h, K, V = self.num_heads, self.key_width, self.value_width
        q, k, v, o = self.qkvo_proj(x).split((K, K, V, V), dim=-1)
        gates = self.gate_proj(x)
        if self.gate_soft_cap is not None:
            gates = self.gate_soft_cap * torch.tanh(gates / self.gate_soft_cap)
        log_i, f_pre = gates.transpose(1, 2).split((h, h), dim=1)
        q, k, v = (z.view(b, t, h, -1).transpose(1, 2) for z in (q, k, v))
        return q, k, v, log_i, F.logsigmoid(f_pre), o

    def _output(self, hidden: Tensor, o: Tensor) -> Tensor:
        """hidden: (b, h, t, v), o: (b, t, V) → (b, t, d)."""
        normed = F.layer_norm(hidden.transpose(1, 2), (self.head_v,), eps=self.norm_eps).flatten(2)
        return self.out_proj(torch.sigmoid(o) * self.norm_weight * normed)

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        self._check_state(state, x.shape[0])
        resets = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, "MLSTM")
        q, k, v, log_i, log_f, o = self._inputs(x)
        hidden, (C, n, m) = chunk_mlstm(q, k, v, log_i, log_f, (state["C"], state["n"], state["m"]), resets,
                                        chunk_size=self.chunk_size, eps=self.eps)
        return self._output(hidden, o), {"C": C, "n": n, "m": m}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        self._check_state(state, x_t.shape[0])
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, "MLSTM")
        if rows is not None:
            state = reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)
        q, k, v, log_i, log_f, o = self._inputs(x_t.unsqueeze(1))
        hidden, (C, n, m) = mlstm_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_i[:, :, 0], log_f[:, :, 0],
                                       (state["C"], state["n"], state["m"]), eps=self.eps)
        return self._output(hidden.unsqueeze(2), o).squeeze(1), {"C": C, "n": n, "m": m}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, k, v = self.dim, self.num_heads, self.head_dim, self.head_v
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len))
        return 2.0 * d * (2 * K + 3 * V + 2 * h) + 2.0 * c * (K + V) + 6.0 * c * h + 6.0 * h * k * (v + 1) + 12.0 * V

    def state_numel(self, seq_len: int) -> int:
        return self.num_heads * (self.head_dim * (self.head_v + 1) + 1)

    def param_count(self) -> int:
        d, h, K, V = self.dim, self.num_heads, self.key_width, self.value_width
        return d * (2 * K + 3 * V + 2 * h) + 2 * h + V
