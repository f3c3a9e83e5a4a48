"""The Real-Gated Linear Recurrent Unit (RG-LRU) of Griffin and Hawk (De et al. 2024), as a parallel scan.

Per channel, with gates from block-diagonal maps of the input (one e × e block per head):

    i_t = σ(x_t W_i + b_i),   r_t = σ(x_t W_r + b_r)                       (input and recurrence gates)
    log a_t = −c · r_t ⊙ softplus(λ),   c = 8                                (a_t ∈ (0, 1])
    h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ x_t)

At a reset (the first token of a sequence or document) a_t = 0 and the √(1 − a_t²) factor is 1,
so h_t = i_t ⊙ x_t: Transformers' `recurrent_gemma` does this where position_ids == 0.
The square root's gradient is bounded (1 / √max(4u, 10⁻⁶), as Griffin and `recurrent_gemma` do),
so a decay near 1 cannot blow a bfloat16 gradient up.

`rglru` computes the gates for all tokens at once and scans the diagonal recurrence with
`pulse.ops.mingru_scan.mingru_scan` (O(√n) sequential steps on the CPU, ⌈log₂ n⌉ elsewhere; the
decays lie in [0, 1], so nothing overflows). `rglru_reference` is the plain per-token loop,
gates included, that the fast form must agree with.

# b batch · t time · l lru width · h heads · e block width (l / h)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import scan
from pulse.ops.mingru_scan import mingru_scan

C = 8.0  # Griffin's constant c: a_t = σ(Λ)^{c·r_t}, so a = exp(−c · r · softplus(λ)) with λ = −Λ
MAX_SQRT_GRADIENT = 1000.0


class _SqrtBoundDerivative(torch.autograd.Function):
    """√u whose gradient is clipped at MAX_SQRT_GRADIENT (Griffin's `sqrt_bound_derivative`)."""

    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:
        ctx.save_for_backward(u)
        return u.sqrt()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (u,) = ctx.saved_tensors
        return grad / (4.0 * u).clamp(min=1.0 / MAX_SQRT_GRADIENT**2).sqrt()


def block_diagonal(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x (…, l) through one (e × e) block per head: weight (h, e, e) as (in, out), bias (h, e) → (…, l)."""
    h, e, _ = weight.shape
    y = torch.einsum("...hi,hij->...hj", x.unflatten(-1, (h, e)), weight) + bias
    return y.flatten(-2)


def rglru_coefficients(x: Tensor, input_gate_weight: Tensor, input_gate_bias: Tensor, recurrent_gate_weight: Tensor,
                       recurrent_gate_bias: Tensor, recurrent_param: Tensor, resets: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
    """(a, b) of h_t = a_t ⊙ h_{t−1} + b_t for every token. x: (b, t, l); resets: (b, t) bool or None."""
    gate_x = torch.sigmoid(block_diagonal(x, input_gate_weight, input_gate_bias))
    gate_a = torch.sigmoid(block_diagonal(x, recurrent_gate_weight, recurrent_gate_bias))
    log_a = -C * gate_a * F.softplus(recurrent_param)  # (b, t, l), ≤ 0
    multiplier = _SqrtBoundDerivative.apply(-torch.expm1(2 * log_a))  # √(1 − a²)
    a = log_a.exp()
    if resets is not None:
        reset = resets.unsqueeze(-1)
        a = a.masked_fill(reset, 0.0)
        multiplier = torch.where(reset, torch.ones_like(multiplier), multiplier)
    return a, x * gate_x * multiplier


def rglru(x: Tensor, input_gate_weight: Tensor, input_gate_bias: Tensor, recurrent_gate_weight: Tensor,
          recurrent_gate_bias: Tensor, recurrent_param: Tensor, h0: Tensor, resets: Tensor | None = None, *,
          method: scan.Method = "auto") -> tuple[Tensor, Tensor]:
    """All states h_1..h_t (b, t, l) and the last (b, l) of the RG-LRU over x (b, t, l) from h0 (b, l);
    resets (b, t) bool marks the tokens where the recurrence starts afresh."""
    a, b = rglru_coefficients(x, input_gate_weight, input_gate_bias, recurrent_gate_weight, recurrent_gate_bias,
                              recurrent_param, resets)
    states = mingru_scan(a, b, h0, method=method)
    return states, states[:, -1]


def rglru_reference(x: Tensor, input_gate_weight: Tensor, input_gate_bias: Tensor, recurrent_gate_weight: Tensor,
                    recurrent_gate_bias: Tensor, recurrent_param: Tensor, h0: Tensor, resets: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
    """`rglru` one token at a time, each gate from its own token, with a plain √ (same values; the same
    gradients wherever 1 − a² > 2.5·10⁻⁷, where the fast form's bound on the √'s gradient is inactive)."""
    h_heads, e, _ = input_gate_weight.shape
    h, states = h0, []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        heads = x_t.view(-1, h_heads, e)
        gate_x = torch.sigmoid(torch.stack([heads[:, j] @ input_gate_weight[j] for j in range(h_heads)], 1)
                               + input_gate_bias).flatten(1)
        gate_a = torch.sigmoid(torch.stack([heads[:, j] @ recurrent_gate_weight[j] for j in range(h_heads)], 1)
                               + recurrent_gate_bias).flatten(1)
        a = torch.exp(-C * gate_a * F.softplus(recurrent_param))
        b = torch.sqrt(1 - a * a) * gate_x * x_t
        if resets is not None:
            reset = resets[:, t : t + 1]
            a = torch.where(reset, torch.zeros_like(a), a)
            b = torch.where(reset, gate_x * x_t, b)
        h = a * h + b
        states.append(h)
    return torch.stack(states, dim=1), h
