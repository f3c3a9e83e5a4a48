"""Mamba-2: a selective SSM with one scalar decay per head, computed by the SSD chunked matmul form.

# b batch · t time · d model · e inner width (expand · d) · h heads · p head width (e / h)
# · s state size · w conv width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import decay_parameters, init_decay_
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask
from pulse.ops.ssd import recurrent_ssd, ssd


class Mamba2(nn.Module):
    """Mamba-2 (Dao & Gu 2024), one group (B, C shared by the heads):

        z, xBC, Δ' = W_in u;   x, B, C = silu(conv_w(xBC));   Δ = softplus(Δ' + b_Δ)   (one Δ per head)
        S_t = exp(Δ_t A_h) S_{t−1} + B_t (Δ_t x_t)ᵀ,   y_t = S_tᵀ C_t + D_h x_t     (A_h = −e^{A_log})
        out = W_out (rmsnorm(y ⊙ silu(z)))

    The decay is a scalar per head and token, so chunks are matmuls (`chunk_ssd`; on CUDA fla's
    simple-GLA kernel where installed: `pulse.ops.ssd.ssd`); `step` is the recurrence. A_h starts
    uniform in [1, 16], b_Δ so that softplus(b_Δ) is log-uniform in [dt_min, dt_max], D at 1.

    State: conv inputs (w−1)·(e + 2s) and S, e·s numbers, whatever the length.
    Cost per token: 2·d·(2e + 2s + h) + 2·e·d (projections) + 2·w·(e + 2s) (conv) + 2·c·s + 3·c·h
    + 2·c·e (the chunk's masked matmul) + 4·e·s (state write and read) + 12·e,
    O(n·(d·e + c·e + e·s)) for n tokens.
    Params: d·(2e + 2s + h) + e·d + (w + 1)·(e + 2s) + 3·h + e.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        d_state: int = 64,
        expand: int = 2,
        conv_size: int = 4,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        chunk_size: int = 64,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        inner = expand * dim
        if num_heads < 1 or inner % num_heads or conv_size < 2 or chunk_size < 1:
            raise PulseError(
                f"Mamba2 needs num_heads dividing expand · dim, conv_size ≥ 2 and chunk_size ≥ 1; got "
                f"num_heads={num_heads} for expand · dim={inner}, conv_size={conv_size}, chunk_size={chunk_size}."
            )
        factory = {"device": device, "dtype": dtype}
        self.dim, self.inner, self.num_heads, self.head_dim = dim, inner, num_heads, inner // num_heads
        self.d_state, self.conv_size, self.chunk_size, self.eps = d_state, conv_size, chunk_size, eps
        e, s, h = inner, d_state, num_heads
        self.in_proj = nn.Linear(dim, 2 * e + 2 * s + h, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(e + 2 * s, conv_size, **factory))
        self.conv_bias = nn.Parameter(torch.zeros(e + 2 * s, **factory))
        self.A_log, self.dt_bias = decay_parameters(h, **factory)
        self.D = nn.Parameter(torch.ones(h, **factory))
        self.norm_weight = nn.Parameter(torch.ones(e, **factory))
        self.out_proj = nn.Linear(e, dim, bias=False, **factory)
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)
        init_decay_(self.A_log, self.dt_bias, a_min=1.0, dt_min=dt_min, dt_max=dt_max)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.conv_weight.device
        dtype = dtype if dtype is not None else self.conv_weight.dtype
        return {
            "conv": torch.zeros(batch, self.conv_size - 1, self.conv_weight.shape[0], device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.num_heads, self.d_state, self.head_dim, device=device, dtype=dtype),
        }

    def _inputs(self, u: Tensor, conv_state: Tensor, resets: Tensor | None = None) -> tuple[Tensor, ...]:
        """x (b, h, t, p), Δ (b, h, t), B, C (b, t, s), z (b, t, e) and the conv state, from u (b, t, d)."""
        b, t, _ = u.shape
        e, s, h = self.inner, self.d_state, self.num_heads
        z, xbc, dt = self.in_proj(u).split((e, e + 2 * s, h), dim=-1)
        xbc, conv_state = causal_depthwise_conv(xbc, self.conv_weight, self.conv_bias, conv_state, resets)
        x, B, C = F.silu(xbc).split((e, s, s), dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (b, t, h)
        return x.view(b, t, h, -1).transpose(1, 2), dt.transpose(1, 2), B, C, z, conv_state

    def _output(self, y: Tensor, x: Tensor, z: Tensor) -> Tensor:
        """y, x: (b, h, t, p); z: (b, t, e) → (b, t, d)."""
        y = (y + self.D[:, None, None] * x).transpose(1, 2).flatten(2)  # (b, t, e)
        return self.out_proj(F.rms_norm(y * F.silu(z), (self.inner,), self.norm_weight, self.eps))

    def forward(self, u: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, u)
        if state is None:
            state = self.init_state(u.shape[0], device=u.device, dtype=u.dtype)
        resets = starts_mask(doc_starts, u.shape[0], u.shape[1], u.device, type(self).__name__)
        x, dt, B, C, z, conv_state = self._inputs(u, state["conv"], resets)
        y, ssm = ssd(x, dt, -self.A_log.exp(), B, C, state["ssm"], resets, chunk_size=self.chunk_size)
        return self._output(y, x, z), {"conv": conv_state, "ssm": ssm}

    def step(self, u_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, u_t, ndim=2)
        rows = step_mask(doc_starts, u_t.shape[0], u_t.device, type(self).__name__)
        if rows is not None:
            state = reset_rows(state, self.init_state(u_t.shape[0], device=u_t.device, dtype=u_t.dtype), rows)
        x, dt, B, C, z, conv_state = self._inputs(u_t.unsqueeze(1), state["conv"])
        y, ssm = recurrent_ssd(x, dt, -self.A_log.exp(), B, C, state["ssm"])  # one token: the recurrence
        return self._output(y, x, z).squeeze(1), {"conv": conv_state, "ssm": ssm}

    def flops_per_token(self, seq_len: int) -> float:
        d, e, s, h, w = self.dim, self.inner, self.d_state, self.num_heads, self.conv_size
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (2 * e + 2 * s + h) + 2.0 * e * d
        return proj + 2.0 * w * (e + 2 * s) + 2.0 * c * s + 3.0 * c * h + 2.0 * c * e + 4.0 * e * s + 12.0 * e

    def state_numel(self, seq_len: int) -> int:
        return (self.conv_size - 1) * (self.inner + 2 * self.d_state) + self.inner * self.d_state

    def param_count(self) -> int:
        d, e, s, h, w = self.dim, self.inner, self.d_state, self.num_heads, self.conv_size
        return d * (2 * e + 2 * s + h) + e * d + (w + 1) * (e + 2 * s) + 3 * h + e
