"""Tokens routed to memories: each memory runs only on its own tokens, gathered into one run in order.

A memory a token is not routed to neither decays nor is written nor read at that token, so its
state at any token is its state after its last routed token. Running each memory over just its
routed tokens is therefore the same recurrence as running it over all of them with those tokens
switched off, at the cost of the routed tokens only (top_k of every M instead of all M).

`compact` lists each memory's routed positions (padded to the longest run L; padding must write,
decay and weigh nothing), `gather` and `scatter` move per-token tensors into and out of those runs,
`run_starts` carries document starts over.

# b batch · t time · M memories · L the longest run (≤ t) · f features
"""

from __future__ import annotations

import torch
from torch import Tensor


def compact(chosen: Tensor) -> tuple[Tensor, Tensor]:
    """chosen (b, t, M) bool → positions (b, M, L) of each memory's routed tokens in order (padding points at
    token 0) and valid (b, M, L) bool, L the most tokens any memory gets in any row (at least 1)."""
    routed = chosen.transpose(1, 2)  # (b, M, t)
    counts = routed.sum(-1)
    if chosen.device.type == "meta" or not counts.numel():  # no values (a summary): the longest possible run
        length = max(1, routed.shape[-1])
    else:
        length = max(1, int(counts.max()))
    order = torch.sort((~routed).to(torch.uint8), dim=-1, stable=True).indices[..., :length]
    valid = torch.arange(order.shape[-1], device=chosen.device) < counts.unsqueeze(-1)
    return order.masked_fill(~valid, 0), valid


def gather(x: Tensor, positions: Tensor) -> Tensor:
    """x (b, t, M, f) per memory, or (b, t, f) the same for every memory → (b, M, L, f) at each run's positions."""
    b, M, L = positions.shape
    if x.dim() == 3:
        x = x.unsqueeze(2).expand(-1, -1, M, -1)
    x = x.transpose(1, 2)  # (b, M, t, f)
    return x.gather(2, positions.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


def scatter(y: Tensor, positions: Tensor, length: int) -> Tensor:
    """y (b, M, L, f) → (b, t, f): every run's values put back at their tokens and summed over the memories.
    Padding entries land on token 0, so they must be zero."""
    b, M, L, f = y.shape
    index = positions.reshape(b, M * L, 1).expand(-1, -1, f)
    return y.new_zeros(b, length, f).scatter_add(1, index, y.reshape(b, M * L, f))


def run_starts(resets: Tensor | None, positions: Tensor, valid: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Document starts (b, t) carried over to the runs: starts (b, M, L), True before a routed token when a
    document started since the memory's previous routed token (for its first, since the window began), and
    keep (b, M), whether the state after a memory's last routed token lasts to the window's end (no start
    after it; otherwise the memory ends the window empty). (None, None) without starts."""
    if resets is None:
        return None, None
    doc = resets.long().cumsum(1)  # (b, t): the document each token is in, 0 before the first start
    b, M, L = positions.shape
    at = doc.unsqueeze(1).expand(-1, M, -1).gather(2, positions)  # (b, M, L)
    previous = torch.cat((at.new_zeros(b, M, 1), at[..., :-1]), dim=-1)
    count = valid.sum(-1, keepdim=True)
    last = at.gather(2, (count - 1).clamp(min=0)).masked_fill(count == 0, 0).squeeze(-1)
    return (at != previous) & valid, last == doc[:, -1:]
