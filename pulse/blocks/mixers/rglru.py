"""Griffin / Hawk's recurrent block: a short causal conv and the RG-LRU on one branch, a GeLU gate on the other.

# b batch · t time · d model · l lru width · h heads · e block width (l / h) · w conv width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input, no_weight_decay
from pulse.errors import PulseError
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.documents import DocStarts, reset_rows, starts_mask, step_mask
from pulse.ops.rglru import rglru, rglru_coefficients


class RGLRU(nn.Module):
    """The recurrent block of Griffin and Hawk (De et al. 2024), RecurrentGemma's `linear_attention` layers:

        u = conv_w(W_x x + b_x)                                   (causal depthwise conv, with bias)
        i_t = σ(u_t W_i + b_i),  r_t = σ(u_t W_r + b_r)           (block-diagonal: one e × e block per head)
        a_t = exp(−8 · r_t ⊙ softplus(λ)),  h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ u_t)
        y_t = W_o (h_t ⊙ gelu(W_y x_t + b_y)) + b_o               (gelu: the tanh approximation)

    At the first token of a sequence (a fresh state) and at every document start, a_t = 0 and the
    √(1 − a_t²) factor is 1 (h_t = i_t ⊙ u_t), as `recurrent_gemma` does at position 0; the conv's
    taps do not reach back across a document start. `forward` scans the diagonal recurrence in
    parallel (`pulse.ops.rglru.rglru`); `step` is one token of it.

    Mapping to Transformers' RecurrentGemmaRecurrentBlock (for a weight converter): `linear_x.*`,
    `linear_y.*`, `linear_out.*` are theirs as they are; `conv_weight` (l, w) is `conv_1d.weight` (l, 1, w)
    with the middle axis dropped, `conv_bias` is `conv_1d.bias`; `recurrent_param` (l),
    `input_gate_weight`/`recurrent_gate_weight` (h, e, e) as (in, out) and `input_gate_bias`/
    `recurrent_gate_bias` (h, e) are `rg_lru.*` of the same names and layouts. num_heads is their
    num_attention_heads, lru_width their lru_width, conv_size their conv1d_width; their
    hidden_activation must be gelu_pytorch_tanh (RecurrentGemma's). They keep the recurrent state in
    float32; this block keeps it in the input's dtype.

    State: conv inputs (w−1)·l, h (l numbers) and one flag per row (the next token starts a sequence).
    Cost per token: 6·d·l (projections) + 4·l·e (gates) + 2·w·l (conv) + 24·l (gate, decay, scan, GeLU).
    Params: 3·d·l + 2·l·e + (w + 6)·l + d.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, lru_width: int | None = None, conv_size: int = 4,
                 device=None, dtype=None):
        super().__init__()
        width = dim if lru_width is None else lru_width
        if num_heads < 1 or width < 1 or width % num_heads or conv_size < 2:
            raise PulseError(
                f"RGLRU needs num_heads dividing lru_width (default: dim) and conv_size ≥ 2; got "
                f"num_heads={num_heads}, lru_width={width}, conv_size={conv_size}."
            )
        factory = {"device": device, "dtype": dtype}
        self.dim, self.lru_width, self.num_heads, self.conv_size = dim, width, num_heads, conv_size
        self.block_width = e = width // num_heads
        self.linear_y = nn.Linear(dim, width, **factory)
        self.linear_x = nn.Linear(dim, width, **factory)
        self.linear_out = nn.Linear(width, dim, **factory)
        self.conv_weight = nn.Parameter(torch.empty(width, conv_size, **factory))
        self.conv_bias = nn.Parameter(torch.empty(width, **factory))
        self.recurrent_param = no_weight_decay(nn.Parameter(torch.empty(width, **factory)))
        self.input_gate_weight = nn.Parameter(torch.empty(num_heads, e, e, **factory))
        self.input_gate_bias = nn.Parameter(torch.empty(num_heads, e, **factory))
        self.recurrent_gate_weight = nn.Parameter(torch.empty(num_heads, e, e, **factory))
        self.recurrent_gate_bias = nn.Parameter(torch.empty(num_heads, e, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Griffin's initialization (as `recurrent_gemma`'s _init_weights, w_init_variance_scale 0.01), with the
        output map's variance scale 1 (Griffin divides it by the depth, which a block does not know)."""
        d, l, w, e = self.dim, self.lru_width, self.conv_size, self.block_width
        with torch.no_grad():
            for linear, fan_in in ((self.linear_x, d), (self.linear_y, d), (self.linear_out, l)):
                nn.init.normal_(linear.weight, std=math.sqrt(1.0 / fan_in))
                nn.init.zeros_(linear.bias)
            nn.init.normal_(self.conv_weight, std=math.sqrt(0.01 / w))
            nn.init.zeros_(self.conv_bias)
            for weight, bias in ((self.input_gate_weight, self.input_gate_bias),
                                 (self.recurrent_gate_weight, self.recurrent_gate_bias)):
                nn.init.normal_(weight, std=math.sqrt(0.01 / e))
                nn.init.zeros_(bias)
            # a^c uniform in [0.9², 0.999²]: softplus(λ) = −½ log u, so λ = log(u^{−½} − 1)
            u = torch.empty_like(self.recurrent_param).uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8)
            self.recurrent_param.copy_(u.log().mul(-0.5).exp().sub(1.0).log())

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.conv_weight.device
        dtype = dtype if dtype is not None else self.conv_weight.dtype
        return {
            "conv": torch.zeros(batch, self.conv_size - 1, self.lru_width, device=device, dtype=dtype),
            "h": torch.zeros(batch, self.lru_width, device=device, dtype=dtype),
            "fresh": torch.ones(batch, dtype=torch.bool, device=device),
        }

    def _check_state(self, state: object, batch: int) -> dict[str, Tensor]:
        ok = isinstance(state, dict) and all(isinstance(state.get(k), Tensor) for k in ("conv", "h", "fresh"))
        if not ok or tuple(state["conv"].shape) != (batch, self.conv_size - 1, self.lru_width) \
                or tuple(state["h"].shape) != (batch, self.lru_width) or tuple(state["fresh"].shape) != (batch,):
            raise PulseError(
                f"RGLRU got a state that does not fit a batch of {batch}; pass the state its forward or init_state "
                "returned."
            )
        return state

    def _gates(self) -> tuple[Tensor, ...]:
        return (self.input_gate_weight, self.input_gate_bias, self.recurrent_gate_weight, self.recurrent_gate_bias,
                self.recurrent_param)

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        b, t, _ = x.shape
        state = self._check_state(state if state is not None else self.init_state(b, device=x.device, dtype=x.dtype),
                                  b)
        starts = starts_mask(doc_starts, b, t, x.device, "RGLRU")
        # the recurrence restarts at document starts and at the first token of a fresh sequence; the conv's
        # state is zeros there already, so only document starts mask its taps
        first = state["fresh"].to(x.device).unsqueeze(1)
        resets = torch.cat((first, torch.zeros(b, t - 1, dtype=torch.bool, device=x.device)), dim=1)
        resets = resets if starts is None else resets | starts
        u, conv = causal_depthwise_conv(self.linear_x(x), self.conv_weight, self.conv_bias, state["conv"], starts)
        states, h = rglru(u, *self._gates(), state["h"], resets)
        y = self.linear_out(states * F.gelu(self.linear_y(x), approximate="tanh"))
        return y, {"conv": conv, "h": h, "fresh": torch.zeros_like(state["fresh"])}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        state = self._check_state(state, x_t.shape[0])
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, "RGLRU")
        if rows is not None:
            state = reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)
        u, conv = causal_depthwise_conv(self.linear_x(x_t).unsqueeze(1), self.conv_weight, self.conv_bias,
                                        state["conv"])
        a, b = rglru_coefficients(u, *self._gates(), state["fresh"].unsqueeze(1))
        h = a[:, 0] * state["h"] + b[:, 0]
        y = self.linear_out(h * F.gelu(self.linear_y(x_t), approximate="tanh"))
        return y, {"conv": conv, "h": h, "fresh": torch.zeros_like(state["fresh"])}

    def flops_per_token(self, seq_len: int) -> float:
        d, l, w, e = self.dim, self.lru_width, self.conv_size, self.block_width
        return 6.0 * d * l + 4.0 * l * e + 2.0 * w * l + 24.0 * l

    def state_numel(self, seq_len: int) -> int:
        return self.conv_size * self.lru_width + 1

    def param_count(self) -> int:
        d, l, w, e = self.dim, self.lru_width, self.conv_size, self.block_width
        return 3 * d * l + 2 * l * e + (w + 6) * l + d
