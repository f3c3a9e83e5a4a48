"""Short causal depthwise convolution that carries its last inputs, so a sequence can be continued.

y_t = bias + Σ_{i<w} weight[:, i] ⊙ x_{t−w+1+i}, with the inputs before the first token taken
from the state. Written as w shifted products: cheaper than conv1d for the widths used here (2–8).
When a gradient is needed the products run inside one autograd function whose backward
accumulates the w shifted input gradients into one buffer; autograd's own backward of the
shifted slices writes a zero-filled full-size gradient per tap and sums them, about twice the
memory traffic (the conv was a fifth of a Gated DeltaNet layer's training step on CPU).

# b batch · t time · c channels · w kernel width
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    """x: (b, t, c); weight: (c, w); bias: (c,) or None; state: (b, w−1, c), the inputs before x.

    Returns y (b, t, c) and the new state: the last w−1 inputs.
    """
    tensors = (x, weight, state) if bias is None else (x, weight, bias, state)
    if torch.is_grad_enabled() and any(z.requires_grad for z in tensors):
        return _CausalConv.apply(x, weight, bias, state)
    return _forward(x, weight, bias, state)


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    t, w = x.shape[1], weight.shape[1]
    xp = torch.cat((state, x), dim=1)  # (b, w−1+t, c)
    y = xp[:, :t] * weight[:, 0]
    for i in range(1, w):
        y = y + xp[:, i : i + t] * weight[:, i]
    if bias is not None:
        y = y + bias
    return y, xp[:, t:].clone()  # a copy: a view would keep the whole sequence's inputs alive


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state):
        t, w = x.shape[1], weight.shape[1]
        xp = torch.cat((state, x), dim=1)  # (b, w−1+t, c)
        y = xp[:, :t] * weight[:, 0]
        for i in range(1, w):
            y.addcmul_(xp[:, i : i + t], weight[:, i])
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(xp, weight)
        ctx.has_bias = bias is not None
        # the new state is a copy, so that it does not share memory with the saved inputs
        return y, xp[:, t:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, d_state_out):
        xp, weight = ctx.saved_tensors
        t, w = dy.shape[1], weight.shape[1]
        dxp = torch.zeros_like(xp)
        if d_state_out is not None:
            dxp[:, t:] += d_state_out
        dw = torch.empty_like(weight)
        for i in range(w):
            dxp[:, i : i + t].addcmul_(dy, weight[:, i])
            dw[:, i] = (xp[:, i : i + t] * dy).sum((0, 1))
        db = dy.sum((0, 1)) if ctx.has_bias else None
        return dxp[:, w - 1 :], dw, db, dxp[:, : w - 1]
