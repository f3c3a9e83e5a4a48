"""Causal linear attention with an optional per-head decay and normaliser.

    S_t = α_t S_{t−1} + k_t v_tᵀ,  o_t = q_t S_t;   z_t = α_t z_{t−1} + k_t,  den_t = q_t · z_t

`chunk_linear_attention` is the fast path: within a chunk of c tokens the outputs come
from one masked (c × c) product, and the state is carried from chunk to chunk. Decays
enter only as exp(g_i − g_j) with j ≤ i, where g is the cumulative log-decay from the
chunk start, so every exponent is ≤ 0 and nothing overflows at any length.
`recurrent_linear_attention` is the per-token loop it must agree with. `resets` (b, t) bool marks
document starts, where S and z start again from zero (`pulse.ops.documents`); the chunked form
keeps them inside the chunk math (pairs of one document only, the carry read and passed on only
where no start intervenes). `linear_attention`
dispatches: fla's Triton kernel on CUDA when installed (pulse.ops.fla), else the chunked form,
and records the path it took in `pulse.ops.backend.paths_taken()`.

# b batch · h heads · t time · n chunks · c chunk length · k key dim · v value dim
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import backend, documents, scan
from pulse.ops import fla as _fla


class LinearAttentionOutput(NamedTuple):
    out: Tensor  # (b, h, t, v): q_t S_t
    state: Tensor  # (b, h, k, v): S after the last token
    den: Tensor | None  # (b, h, t): q_t · z_t, with normalize
    z: Tensor | None  # (b, h, k): z after the last token, with normalize


def recurrent_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    z: Tensor | None = None,
    *,
    normalize: bool = False,
    resets: Tensor | None = None,
) -> LinearAttentionOutput:
    """Reference. q, k: (b, h, t, k); v: (b, h, t, v); log_decay (≤ 0): (b, h, t); state: (b, h, k, v); z: (b, h, k);
    resets: (b, t) bool or None."""
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, dk, v.shape[-1]) if state is None else state
    if normalize and z is None:
        z = q.new_zeros(b, h, dk)
    outs, dens = [], []
    for i in range(t):
        if resets is not None:
            s = s.masked_fill(resets[:, i, None, None, None], 0)
            z = z.masked_fill(resets[:, i, None, None], 0) if normalize else z
        if log_decay is not None:
            alpha = log_decay[:, :, i, None].exp()
            s = alpha.unsqueeze(-1) * s
            z = alpha * z if normalize else z
        s = s + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, i], s))
        if normalize:
            z = z + k[:, :, i]
            dens.append((q[:, :, i] * z).sum(-1))
    den = torch.stack(dens, dim=2) if normalize else None
    return LinearAttentionOutput(torch.stack(outs, dim=2), s, den, z if normalize else None)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    z: Tensor | None = None,
    *,
    normalize: bool = False,
    chunk_size: int = 64,
    resets: Tensor | None = None,
) -> LinearAttentionOutput:
    """`chunk_linear_attention`, run by fla's kernel on CUDA where it is installed and allowed (not with
    document starts: fla takes them only as cu_seqlens of one flat row)."""
    if resets is not None:
        backend.record("linear_attention", "eager (document starts)")
        return chunk_linear_attention(q, k, v, log_decay, state, z, normalize=normalize, chunk_size=chunk_size,
                                      resets=resets)
    out = _fla.dispatch(
        "linear_attention", q, lambda: _fla.probe(q.device, q.dtype, log_decay is not None),
        lambda: _with_normaliser(q, k, v, log_decay, state, z, normalize, _fla.simple_gla),
    )
    if out is not None:
        return out
    return chunk_linear_attention(q, k, v, log_decay, state, z, normalize=normalize, chunk_size=chunk_size)


def chunk_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    z: Tensor | None = None,
    *,
    normalize: bool = False,
    chunk_size: int = 64,
    resets: Tensor | None = None,
) -> LinearAttentionOutput:
    """Chunkwise-parallel form of `recurrent_linear_attention`; same arguments, same results.

    The normaliser rides along as one more value column: with v' = [v, 1] and S' = [S, z],
    q_t S'_t = [q_t S_t, q_t · z_t], so den comes out of the same matmuls as the output.
    Cost: four (c × k)·(k × c|v) products per chunk and head, one add per chunk for the carry.
    """
    core = lambda q, k, v, g, s0: _chunk_core(q, k, v, g, s0, chunk_size, resets)  # noqa: E731
    return _with_normaliser(q, k, v, log_decay, state, z, normalize, core)


def _with_normaliser(q, k, v, log_decay, state, z, normalize, core) -> LinearAttentionOutput:
    """Run `core(q, k, v, log_decay, s0) → (out, final state)` with the normaliser as a ones column of v."""
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    s0 = q.new_zeros(b, h, dk, dv) if state is None else state
    if normalize:
        z0 = q.new_zeros(b, h, dk) if z is None else z
        v = torch.cat((v, v.new_ones(b, h, t, 1)), dim=-1)
        s0 = torch.cat((s0, z0.unsqueeze(-1)), dim=-1)
    out, s = core(q, k, v, log_decay, s0)
    if normalize:
        return LinearAttentionOutput(out[..., :dv], s[..., :dv], out[..., dv], s[..., dv])
    return LinearAttentionOutput(out, s, None, None)


def _chunk_core(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, s0: Tensor, chunk_size: int,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Outputs (b, h, t, v) and the final state (b, h, k, v) of the un-normalised recurrence."""
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # padded tokens have k = v = 0 and decay 1, so they leave outputs and state untouched
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        if log_decay is not None:
            log_decay = F.pad(log_decay, (0, pad))
    q, k, v = q.reshape(b, h, n, c, dk), k.reshape(b, h, n, c, dk), v.reshape(b, h, n, c, dv)
    scores = q @ k.transpose(-1, -2)  # (b, h, n, c, c)
    if log_decay is None:
        # the product's output is not needed by its backward, so it is masked in place
        scores = scores.tril_()
        k_end = k  # each key's weight in its chunk's contribution to the state
        q_start = q  # each query's weight on the state before its chunk
        chunk_decay = None
    else:
        causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
        # log decays summed in at least float32 (a bf16 cumulative sum loses them); factors in q's dtype
        wide = torch.promote_types(log_decay.dtype, torch.float32)
        g = log_decay.to(wide).reshape(b, h, n, c).cumsum(dim=-1)  # (b, h, n, c): log decay from the chunk start
        scores = scores * (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp().to(q.dtype)
        k_end = k * (g[..., -1:] - g).exp().unsqueeze(-1).to(k.dtype)
        q_start = q * g.exp().unsqueeze(-1).to(q.dtype)
        chunk_decay = g[..., -1]
    kept = None
    if resets is not None:
        same, visible, last, kept = documents.chunk_masks(resets, n, c)
        scores = scores * same
        k_end, q_start = k_end * last.unsqueeze(-1), q_start * visible.unsqueeze(-1)
    local = k_end.transpose(-1, -2) @ v  # (b, h, n, k, v): each chunk's contribution to the state
    starts, s = _carry(s0, local, chunk_decay, kept)
    out = torch.baddbmm(
        (scores @ v).reshape(-1, c, dv), q_start.reshape(-1, c, dk), starts.reshape(-1, dk, dv)
    )  # scores·v + q_start·S_start, one fused product-add
    return out.reshape(b, h, n * c, dv)[:, :, :t], s


def _carry(initial: Tensor, local: Tensor, log_chunk_decay: Tensor | None,
           kept: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """States before each chunk and after the last: x_i = decay_i · x_{i−1} + local_i.

    initial: (b, h, …); local: (b, h, n, …); log_chunk_decay: (b, h, n) or None for no decay; kept:
    (b, 1, n) bool, False for chunks a document starts in (the carry does not pass them), or None.
    A loop of n small adds on the CPU, ⌈log₂ n⌉ whole-tensor steps elsewhere (`pulse.ops.scan`).
    """
    decay = None if log_chunk_decay is None else log_chunk_decay.exp().to(local.dtype)
    if kept is not None:
        decay = kept.to(local.dtype) if decay is None else decay * kept
    if decay is not None:
        decay = decay.view(*decay.shape, *(1,) * (local.ndim - 3))
    return scan.carry(initial, local, decay, dim=2)
