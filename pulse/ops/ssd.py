"""Mamba-2's state-space duality (SSD): a selective SSM with one scalar decay per head.

    S_t = a_t S_{t−1} + B_t (Δ_t x_t)ᵀ,   y_t = S_tᵀ C_t,   a_t = exp(Δ_t A_h),  A_h < 0

per head h, with the state S ∈ ℝ^{n×p} (n state size, p head width) and B, C shared by all heads
(Dao & Gu 2024, one group). Because the decay is a scalar per head and token, a chunk of c tokens
is one masked matmul (the "dual", attention-like form), with g_i the cumulative log-decay from
the chunk start:

    Y = (C Bᵀ ⊙ L) (Δ ⊙ X) + (C ⊙ e^g) S₀,    L_ij = e^{g_i − g_j} for j ≤ i (0 above)
    S_c = e^{g_c} S₀ + (B ⊙ Δ e^{g_c − g})ᵀ X

`chunk_ssd` computes every chunk's local output and state contribution at once, carries the state
from chunk to chunk (one scaled add each), then reads all chunk starts in one batched matmul.
C Bᵀ is formed once for all heads. Only exponents ≤ 0 are formed, so nothing overflows.
`recurrent_ssd` is the per-token loop it must agree with (values and gradients). `resets` (b, t)
bool marks document starts, where S starts again from zero; the chunked form keeps them inside the
chunk math (L for pairs of one document only, the carry read and passed on only where no start
intervenes: `pulse.ops.documents.chunk_masks`). `ssd` dispatches:
the SSD is simple gated linear attention (q = C, k = B, v = Δ x, log decay Δ A: `as_gla`), so on
CUDA with fla installed it runs fla's chunked simple-GLA kernel (pulse.ops.fla), else `chunk_ssd`,
and records the path under "ssd" in `pulse.ops.backend.paths_taken()`.

# b batch · h heads · t time · n chunks · c chunk length · p head width · s state size
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import backend, documents, scan
from pulse.ops import fla as _fla


def recurrent_ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None = None, resets: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference. x: (b, h, t, p); dt (> 0): (b, h, t); A (< 0): (h,); B, C: (b, t, s).

    state: (b, h, s, p) or None for zeros; resets: (b, t) bool or None. Returns y (b, h, t, p) and
    the state after the last token.
    """
    b, h, t, p = x.shape
    s = x.new_zeros(b, h, B.shape[-1], p) if state is None else state
    outs = []
    for i in range(t):
        if resets is not None:
            s = s.masked_fill(resets[:, i, None, None, None], 0)
        a = (dt[:, :, i] * A).exp()[..., None, None]  # (b, h, 1, 1)
        s = a * s + B[:, None, i, :, None] * (dt[:, :, i, None] * x[:, :, i]).unsqueeze(-2)
        outs.append(torch.einsum("bs,bhsp->bhp", C[:, i], s))
    return torch.stack(outs, dim=2), s


def ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None, *, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    """`chunk_ssd`, run by fla's simple-GLA kernel on CUDA where it is installed and allowed (not with
    document starts: fla takes them only as cu_seqlens of one flat row)."""
    if resets is not None:
        backend.record("ssd", "eager (document starts)")
        return chunk_ssd(x, dt, A, B, C, state, resets, chunk_size=chunk_size)
    out = _fla.dispatch(
        "ssd", x, lambda: _fla.probe(x.device, x.dtype, True), lambda: as_gla(x, dt, A, B, C, state, _fla.simple_gla)
    )
    if out is not None:
        return out
    return chunk_ssd(x, dt, A, B, C, state, chunk_size=chunk_size)


def as_gla(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None, kernel: Callable
) -> tuple[Tensor, Tensor]:
    """The SSD through a simple-GLA `kernel(q, k, v, log_decay, s0) → (out, final state)` (PULSE's layout:
    q, k (b, h, t, s), v (b, h, t, p), log_decay (b, h, t), s0 (b, h, s, p)): every head gets its own view
    of C as queries and B as keys, the values are Δ x and the log decay is Δ A."""
    b, h, t, p = x.shape
    s0 = x.new_zeros(b, h, B.shape[-1], p) if state is None else state
    q, k = (z.to(x.dtype).unsqueeze(1).expand(b, h, t, z.shape[-1]) for z in (C, B))
    wide = torch.promote_types(dt.dtype, torch.float32)  # log-decays at least in float32, as chunk_ssd
    out, s = kernel(q, k, x * dt.unsqueeze(-1).to(x.dtype), dt.to(wide) * A.to(wide)[:, None], s0)
    return out.to(x.dtype), s.to(s0.dtype)


def chunk_ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None, *, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    """Chunked matmul form of `recurrent_ssd`; same arguments, same results.

    Half precision is computed in float32 (the cumulative log-decays need it) and cast back.
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x, dt, A, B, C = (z.float() for z in (x, dt, A, B, C))
        state = None if state is None else state.float()
    b, h, t, p = x.shape
    ds = B.shape[-1]
    s0 = x.new_zeros(b, h, ds, p) if state is None else state
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # padded tokens have Δ = 0 (decay 1, no write) and B = C = 0: they change nothing
        x = F.pad(x, (0, 0, 0, pad))
        dt = F.pad(dt, (0, pad))
        B, C = (F.pad(z, (0, 0, 0, pad)) for z in (B, C))
    x, dt = x.reshape(b, h, n, c, p), dt.reshape(b, h, n, c)
    B, C = B.reshape(b, 1, n, c, ds), C.reshape(b, 1, n, c, ds)
    g = (dt * A[:, None, None]).cumsum(dim=-1)  # (b, h, n, c): log decay from the chunk start
    causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril()
    L = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()  # (b, h, n, c, c)
    to_end, from_start, across = (g[..., -1:] - g).exp(), g.exp(), g[..., -1].exp()
    if resets is not None:
        same, visible, last, kept = documents.chunk_masks(resets, n, c)
        L, to_end, from_start, across = L * same, to_end * last, from_start * visible, across * kept
    xdt = x * dt.unsqueeze(-1)  # (b, h, n, c, p)
    local_y = (C @ B.transpose(-1, -2) * L) @ xdt  # (b, h, n, c, p); C Bᵀ shared by the heads
    local_s = (B * to_end.unsqueeze(-1)).transpose(-1, -2) @ xdt  # (b, h, n, s, p)
    starts, s = _carry(s0, local_s, across)
    y = local_y + (C * from_start.unsqueeze(-1)) @ starts  # (b, h, n, c, p)
    return y.reshape(b, h, n * c, p)[:, :, :t].to(dtype), s.to(dtype)


def _carry(initial: Tensor, local: Tensor, chunk_decay: Tensor) -> tuple[Tensor, Tensor]:
    """States before each chunk (b, h, n, s, p) and after the last: S_i = a_i S_{i−1} + local_i
    (a loop on the CPU, log depth elsewhere: `pulse.ops.scan`)."""
    return scan.carry(initial, local, chunk_decay[..., None, None], dim=2)
