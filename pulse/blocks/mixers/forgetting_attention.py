"""Forgetting attention (FoX): causal softmax attention with a data-dependent forget gate on the logits.

# b batch · t new tokens · n cached tokens · d model · h heads · e head dim (d/h)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.layers.positions import Rotary
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.documents import DocStarts, first_keys, starts_mask, step_mask
from pulse.ops.forgetting_attention import forgetting_attention


class ForgettingAttention(nn.Module):
    """Forgetting Transformer's attention (Lin et al., ICLR 2025), per head:

        q, k, v = W_q x, W_k x, W_v x;   f_t = σ(w_fᵀ x_t + b_f) ∈ (0, 1)
        o_i = Σ_{j≤i} exp(q_i·k_j/√e + Σ_{l=j+1..i} log f_l) v_j / Σ_{j≤i} exp(…),   y = W_o o

    Softmax attention whose logit for a key j decays by the forget gates of the tokens after it: f ≡ 1
    is plain causal attention (`attention`), a small f_t lets a head drop its past at t. No positions
    are needed (FoX uses none); with `rotary_base` q and k are rotated as in `attention`. Computed with
    SDPA under an additive float mask c_i − c_j (c the cumulative log-forget), a block of 512 queries at a
    time (`pulse.ops.forgetting_attention`); `step` is one token of the same. Two of FoX's "Pro" extras are
    options: `qk_norm` (q, k ← RMSNorm per head, a scale per channel, before any rotation) and
    `output_gate` (o ← o ⊙ σ(W_g x) before W_o).

    With document starts a query sees the keys of its own document only, as in `attention`; the state
    then records where the last document began ("start", (b,)).
    State: the KV cache plus each cached key's log-decay to the latest token ("g", c_{n−1} − c_j ≤ 0, kept
    relative so it never drifts): 2·n·d + n·h numbers after n tokens — it grows with n, as attention's does
    (no O(1) state: this is attention). Cost per token at context n: 8·d² + 2·d·h (projections and gate)
    + (4·d + 2·h)·(n + 1)/2 averaged over n tokens (scores, bias and mixing) — quadratic in n overall;
    + 2·d² + d with the output gate, + 8·d with QK-norm.
    Params: 4·d² + d·h + h (+ 4·d with bias, + d² with output_gate, + 2·d with qk_norm).
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        bias: bool = False,
        qk_norm: bool = False,
        output_gate: bool = False,
        rotary_base: float | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide dim ({dim}); pick a divisor of {dim}.")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim, self.bias = dim, num_heads, dim // num_heads, bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias, **factory)
        self.fgate = nn.Linear(dim, num_heads, bias=True, **factory)
        self.out = nn.Linear(dim, dim, bias=bias, **factory)
        self.qk_norm, self.output_gate = qk_norm, output_gate
        self.q_scale = nn.Parameter(torch.ones(num_heads, 1, self.head_dim, **factory)) if qk_norm else None
        self.k_scale = nn.Parameter(torch.ones(num_heads, 1, self.head_dim, **factory)) if qk_norm else None
        self.ogate = nn.Linear(dim, dim, bias=False, **factory) if output_gate else None
        self.rotary = Rotary(self.head_dim, base=rotary_base) if rotary_base is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # FoX's init of the gate: small weights, zero bias (f ≈ σ(0) = ½ at first; the gate learns its spans)
        with torch.no_grad():
            nn.init.normal_(self.fgate.weight, std=0.02)
            nn.init.zeros_(self.fgate.bias)
            for scale in (self.q_scale, self.k_scale):
                if scale is not None:
                    nn.init.ones_(scale)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.qkv.weight.device
        dtype = dtype if dtype is not None else self.qkv.weight.dtype
        empty = torch.zeros(batch, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(), "g": torch.zeros(batch, self.num_heads, 0, device=device, dtype=dtype)}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        b, t, d = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        resets = starts_mask(doc_starts, b, t, x.device, type(self).__name__)
        n = state["k"].shape[2]
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (b, h, t, e) each
        if self.qk_norm:
            q = F.rms_norm(q, (self.head_dim,), eps=1e-6) * self.q_scale
            k = F.rms_norm(k, (self.head_dim,), eps=1e-6) * self.k_scale
        if self.rotary is not None:
            q, k = self.rotary(q, offset=n), self.rotary(k, offset=n)
        log_f = F.logsigmoid(self.fgate(x)).transpose(1, 2)  # (b, h, t), ≤ 0
        k = torch.cat((state["k"], k), dim=2)  # (b, h, n+t, e)
        v = torch.cat((state["v"], v), dim=2)
        cum = torch.cat((-state["g"], log_f.cumsum(dim=-1)), dim=2)  # (b, h, n+t): c_j − c_{n−1}
        new = {"k": k, "v": v, "g": cum[:, :, -1:] - cum}  # each key's log-decay to the latest token, ≤ 0
        first = None
        if resets is not None or "start" in state:
            first = first_keys(resets, state.get("start"), b, n, t, x.device)  # (b, t)
            new["start"] = first[:, -1]
        y = forgetting_attention(q, k, v, cum, first=first).transpose(1, 2).reshape(b, t, d)
        if self.ogate is not None:
            y = y * torch.sigmoid(self.ogate(x))
        return self.out(y), new

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        y, state = self.forward(x_t.unsqueeze(1), state, doc_starts=None if rows is None else rows.unsqueeze(1))
        return y.squeeze(1), state

    def flops_per_token(self, seq_len: int) -> float:
        # token i attends i+1 keys; averaged over a sequence of seq_len tokens: (seq_len+1)/2
        d, h = self.dim, self.num_heads
        extras = (2.0 * d**2 + d if self.output_gate else 0.0) + (8.0 * d if self.qk_norm else 0.0)
        return 8.0 * d**2 + 2.0 * d * h + extras + (4.0 * d + 2.0 * h) * (seq_len + 1) / 2

    def state_numel(self, seq_len: int) -> int:
        return seq_len * (2 * self.dim + self.num_heads)

    def param_count(self) -> int:
        d, h = self.dim, self.num_heads
        extras = (d**2 if self.output_gate else 0) + (2 * d if self.qk_norm else 0)
        return 4 * d**2 + d * h + h + extras + (4 * d if self.bias else 0)
