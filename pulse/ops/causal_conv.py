"""Short causal depthwise convolution that carries its last inputs, so a sequence can be continued.

y_t = bias + Σ_{i<w} weight[:, i] ⊙ x_{t−w+1+i}, with the inputs before the first token taken
from the state. Written as w shifted products: cheaper than conv1d for the widths used here (2–8).
When a gradient is needed the products run inside one autograd function whose backward
accumulates the w shifted input gradients into one buffer; autograd's own backward of the
shifted slices writes a zero-filled full-size gradient per tap and sums them, about twice the
memory traffic (the conv was a fifth of a Gated DeltaNet layer's training step on CPU).

With document starts (`resets`, (b, t) bool) a tap that would reach back across the start of its
token's document reads zero, as the document alone would (its conv starts from zeros), and the
state keeps only inputs of the last document.

# b batch · t time · c channels · w kernel width
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pulse.ops import documents


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor,
                          resets: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x: (b, t, c); weight: (c, w); bias: (c,) or None; state: (b, w−1, c), the inputs before x;
    resets: (b, t) bool document starts or None.

    Returns y (b, t, c) and the new state: the last w−1 inputs (of the last document).
    """
    masks = None if resets is None else tap_masks(resets, weight.shape[1], x.dtype)
    tensors = (x, weight, state) if bias is None else (x, weight, bias, state)
    if torch.is_grad_enabled() and any(z.requires_grad for z in tensors):
        return _CausalConv.apply(x, weight, bias, state, masks)
    return _forward(x, weight, bias, state, masks)


def tap_masks(resets: Tensor, w: int, dtype: torch.dtype) -> tuple[list[Tensor | None], Tensor]:
    """Per tap i, (b, t, 1): 1 where tap i (reaching w−1−i tokens back) stays in its token's document
    (None for the tap on the token itself); and (b, w−1, 1): 1 for the state's inputs that belong to
    the last document."""
    since = documents.since_start(resets)  # (b, t)
    taps = [(since >= w - 1 - i).unsqueeze(-1).to(dtype) if i < w - 1 else None for i in range(w)]
    lags = torch.arange(w - 2, -1, -1, device=resets.device)  # lag of state entry m from the last token
    return taps, (since[:, -1:] >= lags).unsqueeze(-1).to(dtype)


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor, masks=None) -> tuple[Tensor, Tensor]:
    t, w = x.shape[1], weight.shape[1]
    xp = torch.cat((state, x), dim=1)  # (b, w−1+t, c)
    taps = masks[0] if masks is not None else [None] * w
    y = None
    for i in range(w):
        term = xp[:, i : i + t] * weight[:, i]
        term = term if taps[i] is None else term * taps[i]
        y = term if y is None else y + term
    if bias is not None:
        y = y + bias
    new = xp[:, t:].clone()  # a copy: a view would keep the whole sequence's inputs alive
    return y, new if masks is None else new * masks[1]


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state, masks):
        t, w = x.shape[1], weight.shape[1]
        xp = torch.cat((state, x), dim=1)  # (b, w−1+t, c)
        if masks is None:
            y = xp[:, :t] * weight[:, 0]
            for i in range(1, w):
                y.addcmul_(xp[:, i : i + t], weight[:, i])
        else:
            y = xp[:, w - 1 :] * weight[:, w - 1]
            for i in range(w - 1):
                y.addcmul_(xp[:, i : i + t] * masks[0][i], weight[:, i])
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(xp, weight)
        ctx.has_bias, ctx.masks = bias is not None, masks
        # the new state is a copy, so that it does not share memory with the saved inputs
        return y, xp[:, t:].clone() if masks is None else xp[:, t:] * masks[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, d_state_out):
        xp, weight = ctx.saved_tensors
        masks = ctx.masks
        t, w = dy.shape[1], weight.shape[1]
        dxp = torch.zeros_like(xp)
        if d_state_out is not None:
            dxp[:, t:] += d_state_out if masks is None else d_state_out * masks[1]
        dw = torch.empty_like(weight)
        for i in range(w):
            dy_i = dy if masks is None or masks[0][i] is None else dy * masks[0][i]
            dxp[:, i : i + t].addcmul_(dy_i, weight[:, i])
            dw[:, i] = (xp[:, i : i + t] * dy_i).sum((0, 1))
        db = dy.sum((0, 1)) if ctx.has_bias else None
        return dxp[:, w - 1 :], dw, db, dxp[:, : w - 1], None
