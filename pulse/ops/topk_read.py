"""Reading k of s slots per query: out_i = Σ_j p_ij · values[idx_ij].

`topk_read` gathers only the k selected rows, one selected position at a time, and
recomputes the gather in the backward pass instead of keeping the (…, k, e) tensor of
picked rows: O(q·k·e) work and O(q·e) extra memory. `topk_read_reference` is the dense
form it must agree with: scatter p into a (q × s) weight matrix and multiply.

# m independent banks · s slots · q queries · k kept per query · e width
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def topk_read_reference(values: Tensor, idx: Tensor, p: Tensor) -> Tensor:
    """values: (m, s, e); idx (int64), p: (m, q, k). Returns (m, q, e)."""
    weights = torch.zeros(*idx.shape[:-1], values.shape[1], dtype=p.dtype, device=p.device).scatter(-1, idx, p)
    return weights @ values


def topk_read(values: Tensor, idx: Tensor, p: Tensor) -> Tensor:
    """Same as `topk_read_reference`, touching only the k selected rows per query."""
    return _TopkRead.apply(values, idx, p)


def _rows(idx: Tensor, s: int) -> Tensor:
    """Row numbers into values.reshape(m·s, e) for each (bank, query, pick): (m, q, k)."""
    offsets = torch.arange(idx.shape[0], device=idx.device).mul_(s).view(-1, 1, 1)
    return idx + offsets


class _TopkRead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, idx, p):
        m, s, e = values.shape
        rows = _rows(idx, s)
        flat = values.reshape(m * s, e)
        out = values.new_zeros(m, idx.shape[1], e)
        for j in range(idx.shape[-1]):
            picked = flat.index_select(0, rows[..., j].reshape(-1)).view(out.shape)
            out.addcmul_(picked, p[..., j, None])
        ctx.save_for_backward(values, rows, p)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        values, rows, p = ctx.saved_tensors
        m, s, e = values.shape
        flat = values.reshape(m * s, e)
        dp = torch.empty_like(p) if ctx.needs_input_grad[2] else None
        dvalues = torch.zeros_like(flat) if ctx.needs_input_grad[0] else None
        for j in range(rows.shape[-1]):
            r = rows[..., j].reshape(-1)
            if dp is not None:
                dp[..., j] = (flat.index_select(0, r).view(dout.shape) * dout).sum(-1)
            if dvalues is not None:
                dvalues.index_add_(0, r, (dout * p[..., j, None]).reshape(-1, e))
        return (None if dvalues is None else dvalues.view(m, s, e)), None, dp
