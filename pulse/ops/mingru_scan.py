"""The linear recurrence of the minGRU gate, h_k = a_k ⊙ h_{k−1} + b_k, as a chunked parallel scan.

`mingru_scan` is the fast path: the n steps are cut into blocks of about √n; all blocks
run their recurrence from zero side by side (√n vectorised steps over every block at
once), the block ends are chained by the same recurrence one level up (√n more steps),
and each block then adds its carried-in state times its cumulative decay. That is
O(√n) sequential steps instead of n, with O(n) work and memory. That is the CPU's form; on any
other device every step is a kernel launch, so the scan runs in ⌈log₂ n⌉ whole-tensor steps
instead (`pulse.ops.scan.inclusive`, O(n log n) work): 7 steps for the 128 chunks of 8k tokens. Decays lie in (0, 1], so
their running products can only shrink towards 0 — no exponential of a sum that could
overflow. `mingru_scan_reference` is the plain loop the fast path must agree with.

# b batch · n steps · f features (any trailing shape, flattened) · m blocks · l block length
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pulse.ops import scan


def mingru_coefficients(gate_logits: Tensor, candidate: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(a, b) of h' = a ⊙ h + b for h' = (1 − z) h + z ĥ, z = σ(g), optionally z scaled by a soft mask in (0, 1).

    1 − σ(g) is taken as σ(−g), exact even where σ(g) rounds to 1.
    """
    if mask is None:
        return torch.sigmoid(-gate_logits), torch.sigmoid(gate_logits) * candidate
    z = torch.sigmoid(gate_logits) * mask
    return 1 - z, z * candidate


def mingru_scan_reference(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states h_1..h_n of h_k = a_k ⊙ h_{k−1} + b_k, one step at a time. a, b: (b, n, …); h0: (b, …)."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for a_k, b_k in zip(a.unbind(1), b.unbind(1)):
        h = a_k * h + b_k
        states.append(h)
    return torch.stack(states, dim=1)


def mingru_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, *, block: int | None = None,
                method: scan.Method = "auto") -> Tensor:
    """All states h_1..h_n of h_k = a_k ⊙ h_{k−1} + b_k in O(√n) sequential steps ("loop", the CPU's
    default) or ⌈log₂ n⌉ ("log", every other device's). a, b: (b, n, …); h0: (b, …)."""
    batch, n = b.shape[:2]
    feature_shape = b.shape[2:]
    a, b = a.reshape(batch, n, -1), b.reshape(batch, n, -1)  # (b, n, f)
    h0 = torch.zeros_like(b[:, 0]) if h0 is None else h0.reshape(batch, -1)
    if scan.resolve(method, b.device) == "log":
        return scan.inclusive(h0, b, a.expand_as(b), dim=1).reshape(batch, n, *feature_shape)
    if block is None:
        block = math.isqrt(max(n - 1, 0)) + 1  # ⌈√n⌉
    if n <= max(block, 2):
        return mingru_scan_reference(a, b, h0).reshape(batch, n, *feature_shape)
    m = -(-n // block)
    pad = m * block - n
    if pad:
        # padded steps are the identity (a = 1, b = 0), so they leave the states untouched
        a = torch.cat((a, a.new_ones(batch, pad, a.shape[-1])), dim=1)
        b = torch.cat((b, b.new_zeros(batch, pad, b.shape[-1])), dim=1)
    # every block from a zero state, all blocks side by side; unbind (not a[:, :, k]) keeps backward O(n)
    a_steps = a.view(batch, m, block, -1).unbind(2)
    b_steps = b.view(batch, m, block, -1).unbind(2)
    h, decay = b_steps[0], a_steps[0]
    local, decays = [h], [decay]
    for a_k, b_k in zip(a_steps[1:], b_steps[1:]):
        h = a_k * h + b_k
        decay = decay * a_k
        local.append(h)
        decays.append(decay)
    ends = mingru_scan_reference(decays[-1], local[-1], h0)  # (b, m, f): state after each block, m ≈ √n steps
    carry = torch.cat((h0.unsqueeze(1), ends[:, :-1]), dim=1).unsqueeze(2)  # (b, m, 1, f)
    states = torch.stack(local, dim=2) + torch.stack(decays, dim=2) * carry  # (b, m, l, f)
    return states.reshape(batch, m * block, -1)[:, :n].reshape(batch, n, *feature_shape)
