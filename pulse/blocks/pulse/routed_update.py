"""One write into a bank of slots: route inputs into the slots, gate, communicate — in few, large matmuls.

Shared by the gru/lstm chunk loop of the PULSE layer and the level updates of the hierarchy.
The math is `StatePropagator(h, TokenToStateRouter(h, inputs))`; only the matmuls are regrouped:

- the router's queries W_q h and the gate's state projection W_h h both read h: one product;
- the router's output projection W_o is linear and feeds only the gate's input projection W_x:
  W_x W_o is folded into one matrix when that costs less than the products it saves;
- weights are laid out (in, out) once per forward: small-row products run faster that way round.

# b batch · s slots · k slot dim · h heads · e head dim · c inputs
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.blocks.pulse.propagator import StatePropagator
from pulse.blocks.pulse.router import TokenToStateRouter


class FusedWeights(NamedTuple):
    state: Tensor  # (k, k + k_h·k): [W_q; W_h]ᵀ, or W_qᵀ for mingru (no state projection)
    folded_in: Tensor | None  # (k, k_x·k): (W_x W_o)ᵀ, or None where W_o and W_x run one after the other


def fuse(router: TokenToStateRouter, prop: StatePropagator, writes: int, rows: int) -> FusedWeights:
    """The regrouped weights for `writes` updates of `rows` slots (batch × slots) each.

    The fold W_x W_o costs k_x·k·k² multiply-adds once; it saves writes·rows·k² of them.
    """
    w_h = getattr(prop, "w_h", None)
    state = router.q.weight if w_h is None else torch.cat((router.q.weight, w_h.weight))
    fold = writes * rows >= prop.w_x.out_features
    folded = (prop.w_x.weight @ router.out.weight).t().contiguous() if fold else None
    return FusedWeights(state.t().contiguous(), folded)


def routed_update(router: TokenToStateRouter, prop: StatePropagator, weights: FusedWeights, h: Tensor,
                  cell: Tensor | None, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor | None]:
    """Slots h (b, s, k) (and the lstm cell) after routing per-head keys/values k, v (b, h, c, e) into them,
    gating and communicating. Returns (h, cell); cell is None except for lstm."""
    projected = h @ weights.state
    q, hs = (projected, None) if prop.gate == "mingru" else projected.split(
        (router.slot_dim, projected.shape[-1] - router.slot_dim), dim=-1)
    mixed = F.scaled_dot_product_attention(router.heads(q), k, v)  # (b, h, s, e)
    mixed = mixed.transpose(-3, -2).flatten(-2)  # (b, s, k)
    if weights.folded_in is not None:
        xs = torch.addmm(prop.w_x.bias, mixed.flatten(0, -2), weights.folded_in).view(*mixed.shape[:-1], -1)
    else:
        xs = prop.w_x(router.out(mixed))  # (b, s, k_x·k)
    if prop.gate == "lstm":
        h_new, c_new = prop.combine((h, cell), xs, hs)
    else:
        h_new, c_new = prop.combine(h, xs, hs), None
    return prop.communicate(h_new), c_new
