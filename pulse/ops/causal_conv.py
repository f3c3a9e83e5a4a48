"""Short causal depthwise convolution that carries its last inputs, so a sequence can be continued.

y_t = bias + Σ_{i<w} weight[:, i] ⊙ x_{t−w+1+i}, with the inputs before the first token taken
from the state. Written as w shifted products: cheaper than conv1d for the widths used here (2–8).

# b batch · t time · c channels · w kernel width
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    """x: (b, t, c); weight: (c, w); bias: (c,) or None; state: (b, w−1, c), the inputs before x.

    Returns y (b, t, c) and the new state: the last w−1 inputs.
    """
    t, w = x.shape[1], weight.shape[1]
    xp = torch.cat((state, x), dim=1)  # (b, w−1+t, c)
    y = xp[:, :t] * weight[:, 0]
    for i in range(1, w):
        y = y + xp[:, i : i + t] * weight[:, i]
    if bias is not None:
        y = y + bias
    return y, xp[:, t:]
