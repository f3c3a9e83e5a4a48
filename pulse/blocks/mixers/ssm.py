"""Selective state-space block (Mamba's S6).

# b batch · t time · d model · e inner width (expand · d) · n state size · r Δ rank · w conv width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input, no_weight_decay
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.documents import DocStarts, per_document, reset_rows, starts_mask, step_mask
from pulse.ops.selective_scan import selective_scan


class SelectiveSSM(nn.Module):
    """x, z = W_in u; x = silu(conv_w(x)); Δ, B, C = softplus(W_Δ W_r x + b_Δ), W_B x, W_C x;
    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t x_t B_tᵀ (A = −exp(A_log) diagonal, per channel and state);
    y = W_out ((h_t C_t + D ⊙ x_t) ⊙ silu(z_t)).

    State: the conv's last w−1 inputs and h, e·(w−1) + e·n numbers whatever the length.
    Cost per token: 6·d·e (projections) + 2·e·(w + 2r + 2n) + 7·e·n (scan) + 15·e, O(n·e·(d + n))
    for a sequence of n tokens. Params: 3·d·e + e·(w + 2·r + 3·n + 3).
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int = 16,
        expand: int = 2,
        conv_size: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        chunk_size: int = 16,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if conv_size < 2:
            raise PulseError(f"conv_size must be ≥ 2, got {conv_size}.")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.d_state, self.conv_size, self.chunk_size = dim, d_state, conv_size, chunk_size
        self.inner = expand * dim
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(dim / 16)
        e, n, r = self.inner, d_state, self.dt_rank
        self.in_proj = nn.Linear(dim, 2 * e, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(e, conv_size, **factory))
        self.conv_bias = nn.Parameter(torch.zeros(e, **factory))
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False, **factory)
        self.dt_proj = nn.Linear(r, e, bias=True, **factory)
        self.A_log = no_weight_decay(nn.Parameter(torch.empty(e, n, **factory)))
        self.D = nn.Parameter(torch.ones(e, **factory))
        self.out_proj = nn.Linear(e, dim, bias=False, **factory)
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)
            # S4D-real: A_n = −(n + 1) in every channel
            self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(e, n))
            self.dt_proj.weight.uniform_(-(r**-0.5), r**-0.5)
            # Δ starts log-uniform in [dt_min, dt_max]: the bias is softplus⁻¹ of it
            dt = torch.exp(torch.rand(e, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.A_log.device
        dtype = dtype if dtype is not None else self.A_log.dtype
        return {
            "conv": torch.zeros(batch, self.conv_size - 1, self.inner, device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.inner, self.d_state, device=device, dtype=dtype),
        }

    def _inputs(self, u: Tensor, conv_state: Tensor) -> tuple[Tensor, ...]:
        """Everything the scan needs from the block input u (b, t, d)."""
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, t, e) each
        x, conv_state = causal_depthwise_conv(x, self.conv_weight, self.conv_bias, conv_state)
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split((self.dt_rank, self.d_state, self.d_state), dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (b, t, e)
        return x, z, dt, B, C, conv_state

    def forward(self, u: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, u)
        resets = starts_mask(doc_starts, u.shape[0], u.shape[1], u.device, type(self).__name__)
        if resets is not None and bool(resets.any()):
            # the selective scan's hand-written backward carries one state: each document runs by itself
            return per_document(self._forward, u, state, resets)
        return self._forward(u, state)

    def _forward(self, u: Tensor, state: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        fresh = state is None  # a scan from zero may run mamba-ssm's kernel on CUDA (pulse.ops.mamba)
        if state is None:
            state = self.init_state(u.shape[0], device=u.device, dtype=u.dtype)
        x, z, dt, B, C, conv_state = self._inputs(u, state["conv"])
        A = -torch.exp(self.A_log)  # (e, n)
        y, h = selective_scan(x, dt, A, B, C, None if fresh else state["ssm"], chunk_size=self.chunk_size)
        y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y), {"conv": conv_state, "ssm": h}

    def step(self, u_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, u_t, ndim=2)
        rows = step_mask(doc_starts, u_t.shape[0], u_t.device, type(self).__name__)
        if rows is not None:
            state = reset_rows(state, self.init_state(u_t.shape[0], device=u_t.device, dtype=u_t.dtype), rows)
        x, z, dt, B, C, conv_state = self._inputs(u_t.unsqueeze(1), state["conv"])
        x, z, dt, B, C = (v.squeeze(1) for v in (x, z, dt, B, C))
        A = -torch.exp(self.A_log)
        h = torch.exp(dt.unsqueeze(-1) * A) * state["ssm"] + (dt * x).unsqueeze(-1) * B.unsqueeze(1)  # (b, e, n)
        y = ((h @ C.unsqueeze(-1)).squeeze(-1) + x * self.D) * F.silu(z)
        return self.out_proj(y), {"conv": conv_state, "ssm": h}

    def flops_per_token(self, seq_len: int) -> float:
        d, e, n, r, w = self.dim, self.inner, self.d_state, self.dt_rank, self.conv_size
        return 6.0 * d * e + 2.0 * e * (w + 2 * r + 2 * n) + 7.0 * e * n + 15.0 * e

    def state_numel(self, seq_len: int) -> int:
        return self.inner * (self.conv_size - 1) + self.inner * self.d_state

    def param_count(self) -> int:
        d, e, n, r, w = self.dim, self.inner, self.d_state, self.dt_rank, self.conv_size
        return 3 * d * e + e * (w + 2 * r + 3 * n + 3)
