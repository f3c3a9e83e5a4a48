"""The carry between chunks: x_i = a_i ⊙ x_{i−1} + b_i over the chunk axis, by a loop or in log depth
(`affine_carry`: the same with a matrix M_i in place of a_i, for the delta rule).

Every chunked form (linear attention, SSD, the selective scan) ends each chunk with a local
state b_i and a decay a_i across the chunk, and needs the state before every chunk. Two ways:

- `loop`: n small steps, one after another. On a CPU each step is a cheap call, and the loop
  does the least work (n multiply-adds), so it is the fastest there.
- `log`: Hillis–Steele, ⌈log₂ n⌉ steps of whole-tensor products, O(n log n) work. On a GPU each
  step of the loop is a kernel launch, and n = 512 chunks (T = 32k) means 512 launches forward
  and as many backward; the log form needs 9. Only products of decays are formed, never their
  inverses, so nothing overflows.

`method="auto"` picks the loop on the CPU and the log form elsewhere. Both give the same
values (up to rounding) and gradients; the tests check one against the other.

# n steps (chunks) along `dim` · the other axes are carried along
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pulse import threads

Method = Literal["auto", "loop", "log"]


def resolve(method: Method, device: torch.device) -> Literal["loop", "log"]:
    """The method `auto` stands for on `device`: the loop on the CPU, the log-depth form elsewhere.

    Every chunked form passes here once per call, so this is where a long run re-checks its CPU
    threads (`pulse.threads.tick`: a clock read unless a re-check is due)."""
    threads.tick()
    if method == "auto":
        return "loop" if device.type == "cpu" else "log"
    return method


def carry(initial: Tensor, local: Tensor, decay: Tensor | None, *, dim: int = 2,
          method: Method = "auto") -> tuple[Tensor, Tensor]:
    """States before each step and after the last of x_i = decay_i ⊙ x_{i−1} + local_i along `dim`.

    initial: local without `dim`; local: (…, n, …) with n at `dim`; decay: broadcastable to local
    (its own, usually smaller, shape is kept), or None for decay 1. Returns (starts, last) with
    starts shaped like local (starts_i = x_{i−1}, starts_0 = initial) and last = x_{n−1}.
    """
    if local.shape[dim] == 0:
        return local, initial
    if resolve(method, local.device) == "loop":
        return _loop(initial, local, decay, dim)
    x = local.movedim(dim, 0)
    a = None if decay is None else decay.movedim(dim, 0)
    states = _log_depth(initial, x, a)
    starts = torch.cat((initial.unsqueeze(0), states[:-1]), dim=0).movedim(0, dim)
    return starts, states[-1]


def inclusive(initial: Tensor, local: Tensor, decay: Tensor, *, dim: int = 1) -> Tensor:
    """All states x_0..x_{n−1} (after each step, n at `dim`) of x_i = decay_i ⊙ x_{i−1} + local_i, in log depth."""
    if local.shape[dim] == 0:
        return local
    return _log_depth(initial, local.movedim(dim, 0), decay.movedim(dim, 0)).movedim(0, dim)


def affine_carry(initial: Tensor, transition: Tensor, local: Tensor, *, dim: int = 2,
                 method: Method = "auto") -> tuple[Tensor, Tensor]:
    """States before each step and after the last of x_i = M_i x_{i−1} + b_i along `dim`, M_i a matrix.

    initial: (…, k, v); transition: (…, n, k, k) and local: (…, n, k, v) with n at `dim`. The
    loop is one batched multiply-add per step; the log form composes the steps' affine maps
    pairwise (M_i M_{i−o}, M_i b_{i−o} + b_i) in ⌈log₂ n⌉ steps, forming products of the M_i and
    never their inverses. Returns (starts, last) as `carry` does.
    """
    if local.shape[dim] == 0:
        return local, initial
    if resolve(method, local.device) == "loop":
        x, starts = initial, []
        for m_i, b_i in zip(transition.unbind(dim), local.unbind(dim)):
            starts.append(x)
            x = torch.baddbmm(b_i.flatten(0, -3), m_i.flatten(0, -3), x.flatten(0, -3)).view_as(b_i)
        return torch.stack(starts, dim=dim), x
    m, x = transition.movedim(dim, 0), local.movedim(dim, 0)
    x = torch.cat(((m[0] @ initial + x[0]).unsqueeze(0), x[1:]), dim=0)
    n, o = x.shape[0], 1
    while o < n:
        x = torch.cat((x[:o], m[o:] @ x[:-o] + x[o:]), dim=0)
        if 2 * o < n:
            m = torch.cat((m[:o], m[o:] @ m[:-o]), dim=0)
        o *= 2
    starts = torch.cat((initial.unsqueeze(0), x[:-1]), dim=0).movedim(0, dim)
    return starts, x[-1]


def _loop(initial: Tensor, local: Tensor, decay: Tensor | None, dim: int) -> tuple[Tensor, Tensor]:
    # Unbind, not indexing: the backward of one unbind is one stack, that of n index ops n full-size scatters.
    decays = [None] * local.shape[dim] if decay is None else decay.unbind(dim)
    x, starts = initial, []
    for decay_i, local_i in zip(decays, local.unbind(dim)):
        starts.append(x)
        x = local_i + x if decay_i is None else torch.addcmul(local_i, decay_i, x)
    return torch.stack(starts, dim=dim), x


def _log_depth(initial: Tensor, x: Tensor, a: Tensor | None) -> Tensor:
    """Inclusive states x_0..x_{n−1} (n first) of x_i = a_i x_{i−1} + b_i, b = x, in ⌈log₂ n⌉ steps."""
    if a is None:
        return initial.unsqueeze(0) + x.cumsum(dim=0)
    # fold the initial state into the first step; then x_i holds the sum over the window (i − o, i]
    # and a_i the product of the decays over it, for o = 1, 2, 4, … until the window covers 0..i
    x = torch.cat((x[:1] + a[:1] * initial, x[1:]), dim=0)
    n, o = x.shape[0], 1
    while o < n:
        x = torch.cat((x[:o], x[o:] + a[o:] * x[:-o]), dim=0)
        if 2 * o < n:
            a = torch.cat((a[:o], a[o:] * a[:-o]), dim=0)
        o *= 2
    return x
