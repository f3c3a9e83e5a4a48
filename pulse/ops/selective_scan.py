"""The selective scan of Mamba (S6): h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) B_tᵀ, y_t = h_t C_t.

Per channel d the state is a vector over n, with its own decay exp(Δ_{t,d} A_{d,n}) for every
(d, n), so the scan is elementwise and has no matmul form. `selective_scan` is the fast path:

- the sequence is cut into chunks of c tokens; a group of chunks is scanned at once, one
  position at a time across all chunks of the group (c steps, each over every chunk);
- chunk-end states from zero are combined by the products of the decays over each chunk,
  which carry the state from chunk to chunk (a loop on the CPU, ⌈log₂ g⌉ steps on a GPU:
  `pulse.ops.scan`) and from group to group;
- the backward pass runs the same two-level scan in reverse and recomputes each group's
  states from its saved start state, so memory stays O(b·d·n) per group instead of the
  O(b·t·d·n) an autograd graph of the loop would keep.

Only products of decay factors in (0, 1] are ever formed (never their inverses), so
nothing overflows at any length or step size. `selective_scan_reference` is the plain
per-token loop it must agree with, values and gradients.

# b batch · t time · d channels · n state size · k chunks · c chunk length · g chunks per group
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from pulse.ops import backend, scan
from pulse.ops import mamba as _mamba


def selective_scan_reference(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference. x, dt (Δ > 0): (b, t, d); A (< 0): (d, n); B, C: (b, t, n); h0: (b, d, n).

    Returns y (b, t, d), h_t."""
    b, t, d = x.shape
    h = x.new_zeros(b, d, A.shape[1]) if h0 is None else h0
    ys = []
    for i in range(t):
        decay = torch.exp(dt[:, i, :, None] * A)  # (b, d, n)
        h = decay * h + (dt[:, i] * x[:, i])[:, :, None] * B[:, i, None, :]
        ys.append((h * C[:, i, None, :]).sum(-1))
    return torch.stack(ys, dim=1), h


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h0: Tensor | None = None,
    *,
    chunk_size: int = 16,
    group_elements: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Chunked form of `selective_scan_reference`; same arguments, same results.

    On CUDA, a scan from a zero state (h0 None) runs mamba-ssm's fused kernel where it is
    installed (`pulse.ops.mamba`); the path taken is recorded under "selective_scan" in
    `pulse.ops.backend.paths_taken()`.

    `group_elements` bounds b·g·c·d·n, the size of the per-group work tensors. By default 2²⁰ on
    the CPU (the group stays in cache) and 2²⁷ elsewhere: on a GPU every step of the group loop is
    a kernel launch, so fewer, larger groups (their chunks carried in log depth) are faster.
    """
    if h0 is None:
        out = _mamba.dispatch(x, dt, A, B, C)
        if out is not None:
            return out
    else:
        why = " (continues a state: mamba-ssm's kernel starts from zero)" if x.is_cuda else ""
        backend.record("selective_scan", "eager" + why)
    if group_elements is None:
        group_elements = 1 << 20 if x.device.type == "cpu" else 1 << 27
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    return _SelectiveScan.apply(x, dt, A, B, C, h0, chunk_size, group_elements)


def _group_states(dt: Tensor, dtx: Tensor, A: Tensor, B: Tensor, h_in: Tensor, a: Tensor, h: Tensor) -> Tensor:
    """Fill a (decays) and h (states) of one group; return the state after it.

    dt, dtx: (g, b, c, d); A: (n, d); B: (g, b, c, n); h_in: (b, n, d); a, h: (g, b, c, n, d) buffers.
    """
    g, c = dt.shape[0], dt.shape[2]
    torch.mul(dt.unsqueeze(-2), A, out=a).exp_()
    torch.mul(dtx.unsqueeze(-2), B.unsqueeze(-1), out=h)  # the inputs, scanned in place below
    if g == 1:
        start, end = h_in.unsqueeze(0), None
    else:
        # each chunk's end state as if it started from zero, then the carries between chunks
        local = h[:, :, 0].clone()
        for i in range(1, c):
            local = torch.addcmul(h[:, :, i], a[:, :, i], local)
        total = a.prod(dim=2)  # (g, b, n, d): decay across each chunk
        start, end = scan.carry(h_in, local, total, dim=0)
    h[:, :, 0].addcmul_(a[:, :, 0], start)
    for i in range(1, c):
        h[:, :, i].addcmul_(a[:, :, i], h[:, :, i - 1])
    return h[-1, :, -1].clone() if end is None else end


def _contract_n(h: Tensor, v: Tensor) -> Tensor:
    """Σ_n h[..., n, d] v[..., n] for h (g, b, c, n, d), v (g, b, c, n)."""
    g, b, c, n, d = h.shape
    return torch.bmm(v.reshape(-1, 1, n), h.reshape(-1, n, d)).view(g, b, c, d)


def _contract_d(h: Tensor, v: Tensor) -> Tensor:
    """Σ_d h[..., n, d] v[..., d] for h (g, b, c, n, d), v (g, b, c, d)."""
    g, b, c, n, d = h.shape
    # as a row vector times hᵀ: BLAS reads the transpose in place, and a (1 × d)(d × n) product is fast
    return torch.bmm(v.reshape(-1, 1, d), h.reshape(-1, n, d).transpose(1, 2)).view(g, b, c, n)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, chunk_size, group_elements):
        b, t, d = x.shape
        n = A.shape[1]
        c = max(1, min(chunk_size, t))
        k = -(-t // c)
        pad = k * c - t
        if pad:
            # padded tokens have Δ = 0 (decay 1, input 0), so they leave the state untouched
            x, dt, B, C = (F.pad(z, (0, 0, 0, pad)) for z in (x, dt, B, C))
        # chunk-major layout, so that a group of chunks is one contiguous block
        x, dt, B, C = (z.reshape(b, k, c, z.shape[-1]).transpose(0, 1).contiguous() for z in (x, dt, B, C))
        At = A.t().contiguous()  # (n, d)
        dtx = dt * x
        g = max(1, min(k, group_elements // max(1, b * c * d * n)))
        a_buf, h_buf = x.new_empty(g, b, c, n, d), x.new_empty(g, b, c, n, d)
        y = x.new_empty(k, b, c, d)
        h, starts = h0.transpose(1, 2), []
        for j0 in range(0, k, g):
            j1 = min(j0 + g, k)
            a, states = a_buf[: j1 - j0], h_buf[: j1 - j0]
            starts.append(h)
            h = _group_states(dt[j0:j1], dtx[j0:j1], At, B[j0:j1], h, a, states)
            y[j0:j1] = _contract_n(states, C[j0:j1])
        ctx.save_for_backward(x, dt, At, B, C, torch.stack(starts))
        ctx.sizes = (t, g)
        return y.transpose(0, 1).reshape(b, k * c, d)[:, :t], h.transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_end):
        x, dt, At, B, C, starts = ctx.saved_tensors
        t, g = ctx.sizes
        k, b, c, d = x.shape
        n = At.shape[0]
        dy = F.pad(dy, (0, 0, 0, k * c - t)).reshape(b, k, c, d).transpose(0, 1).contiguous()
        dtx = dt * x
        d_dtx, d_dt = torch.empty_like(x), torch.empty_like(x)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(At)
        bufs = [x.new_empty(g, b, c, n, d) for _ in range(3)]
        # r: gradient of the state after the current group (b, n, d)
        r = torch.zeros_like(starts[0]) if dh_end is None else dh_end.transpose(1, 2)
        for gi, j0 in reversed(list(enumerate(range(0, k, g)))):
            j1 = min(j0 + g, k)
            m = j1 - j0
            a, states, gh = (buf[:m] for buf in bufs)
            dtg, dtxg, Bg, Cg, dyg = dt[j0:j1], dtx[j0:j1], B[j0:j1], C[j0:j1], dy[j0:j1]
            _group_states(dtg, dtxg, At, Bg, starts[gi], a, states)
            dC[j0:j1] = _contract_d(states, dyg)
            # gh_t = ∂L/∂h_t = C_t dy_tᵀ + a_{t+1} ⊙ gh_{t+1}: the forward's two-level scan, reversed
            torch.mul(dyg.unsqueeze(-2), Cg.unsqueeze(-1), out=gh)
            if m == 1:
                ends = r.unsqueeze(0)
            else:
                first = gh[:, :, c - 1].clone()
                for i in range(c - 2, -1, -1):
                    first = torch.addcmul(gh[:, :, i], a[:, :, i + 1], first)
                # r before chunk j = a_0 ⊙ (first_j + inner_j ⊙ r after it): the carry, run from the last chunk
                a0 = a[:, :, 0]
                inner = a[:, :, 1:].prod(dim=2).mul_(a0)  # (g, b, n, d): decay across the whole chunk
                ends, r = scan.carry(r, (a0 * first).flip(0), inner.flip(0), dim=0)
                ends = ends.flip(0)  # ends_j: the gradient of the state after chunk j
            gh[:, :, c - 1].add_(ends)
            for i in range(c - 2, -1, -1):
                gh[:, :, i].addcmul_(a[:, :, i + 1], gh[:, :, i + 1])
            if m == 1:
                r = a[0, :, 0] * gh[0, :, 0]
            # ∂L/∂(Δ A) = gh_t ⊙ a_t ⊙ h_{t−1} = gh_t ⊙ (h_t − u_t); a is no longer needed, so it holds u
            u = torch.mul(dtxg.unsqueeze(-2), Bg.unsqueeze(-1), out=a)
            q = states.sub_(u).mul_(gh)
            d_dtx[j0:j1] = _contract_n(gh, Bg)
            dB[j0:j1] = _contract_d(gh, dtxg)
            d_dt[j0:j1] = torch.mul(q, At, out=a).sum(-2)
            dA += torch.mul(q, dtg.unsqueeze(-2), out=a).sum((0, 1, 2))
        dx = d_dtx * dt
        d_dt = d_dt + d_dtx * x
        unpad = lambda z: z.transpose(0, 1).reshape(b, k * c, z.shape[-1])[:, :t]  # noqa: E731
        return unpad(dx), unpad(d_dt), dA.t(), unpad(dB), unpad(dC), r.transpose(1, 2), None, None
