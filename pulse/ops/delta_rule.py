"""The (gated) delta rule: a fast-weight state corrected toward each new key → value pair.

    S_t = α_t S_{t−1} + k_t u_tᵀ,   u_t = β_t (v_t − α_t S_{t−1}ᵀ k_t),   o_t = S_tᵀ q_t

i.e. S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ: the value stored under k_t is moved a
fraction β_t of the way to v_t, after the whole state decays by α_t (α = 1: DeltaNet; Schlag et
al. 2021, Yang et al. 2024, "Gated Delta Networks", Yang, Kautz & Hatamizadeh 2024).

`chunk_delta_rule` is the fast path (the WY/UT form). In a chunk of c tokens with state S₀ at
its start and g_i the cumulative log-decay from the chunk start (γ_i = e^{g_i}), unrolling gives

    (I + A) U = diag(β) V − diag(β γ) K S₀,    A_ij = β_i e^{g_i − g_j} k_i·k_j  for j < i (else 0)

so U = W₁ − W₂ S₀ with W₁ = T diag(β) V, W₂ = T diag(βγ) K and T = (I + A)⁻¹ — one unit lower
triangular solve per chunk, for every chunk at once, independent of S₀. With P = Q Kᵀ ⊙ D
(D_ij = e^{g_i − g_j} for j ≤ i, 0 above the diagonal) and K' = K ⊙ γ_c/γ,

    O = (Q ⊙ γ) S₀ + P U = (Q ⊙ γ − P W₂) S₀ + P W₁
    S_c = γ_c S₀ + K'ᵀ U = (γ_c I − K'ᵀ W₂) S₀ + K'ᵀ W₁

so the state passes from chunk to chunk by an affine map S ← M S + B whose M (k × k) and B are
known for every chunk up front: the carry is one batched multiply-add per chunk (a loop on the
CPU) or ⌈log₂ n⌉ steps composing the maps (elsewhere; `pulse.ops.scan.affine_carry`), and the
outputs are one batched product after it. Only exponents ≤ 0 are formed.
`recurrent_delta_rule` is the per-token loop it must agree with (values and gradients).

`resets` (b, t) bool marks document starts (`pulse.ops.documents`): there S is reset to zero
before the token writes. The chunked form honours them inside the chunk math: A and P keep only
pairs of one document, only tokens before the chunk's first start read S₀ (and correct against
it), only the chunk's last document enters S_c, and S₀ passes a chunk only if nothing starts in it.

# b batch · h heads · t time · n chunks · c chunk length · k key dim · v value dim
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import backend, documents, scan

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def recurrent_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor | None = None, state: Tensor | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference. q, k: (b, h, t, k); v: (b, h, t, v); beta: (b, h, t); log_decay (≤ 0): (b, h, t) or None.

    state: (b, h, k, v) or None for zeros; resets: (b, t) bool or None. Returns o (b, h, t, v) and
    the state after the last token.
    """
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, dk, v.shape[-1]) if state is None else state
    outs = []
    for i in range(t):
        if resets is not None:
            s = s.masked_fill(resets[:, i, None, None, None], 0)
        if log_decay is not None:
            s = log_decay[:, :, i, None, None].exp() * s
        k_i = k[:, :, i]  # (b, h, k)
        u = beta[:, :, i, None] * (v[:, :, i] - torch.einsum("bhk,bhkv->bhv", k_i, s))
        s = s + k_i.unsqueeze(-1) * u.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, i], s))
    return torch.stack(outs, dim=2), s


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    resets: Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Chunkwise-parallel (WY/UT) form of `recurrent_delta_rule`; same arguments, same results.

    Half precision is computed in float32 (the triangular solve needs it) and cast back.
    """
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v, beta = (x.float() for x in (q, k, v, beta))
        log_decay = None if log_decay is None else log_decay.float()
        state = None if state is None else state.float()
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    s = q.new_zeros(b, h, dk, dv) if state is None else state
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # padded tokens have q = k = v = 0, β = 0 and decay 1: they write nothing and read nothing
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta = F.pad(beta, (0, pad))
        log_decay = None if log_decay is None else F.pad(log_decay, (0, pad))
    q, k, v = q.reshape(b, h, n, c, dk), k.reshape(b, h, n, c, dk), v.reshape(b, h, n, c, dv)
    beta = beta.reshape(b, h, n, c, 1)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    if log_decay is None:
        decay = causal.to(q.dtype)  # (c, c): D
        k_end, q_start, rhs_k = k, q, beta * k
    else:
        g = log_decay.reshape(b, h, n, c).cumsum(dim=-1)  # (b, h, n, c): log decay from the chunk start
        decay = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()  # (b, h, n, c, c)
        k_end = k * (g[..., -1:] - g).exp().unsqueeze(-1)
        q_start = q * g.exp().unsqueeze(-1)
        rhs_k = beta * k * g.exp().unsqueeze(-1)
    kept = None
    if resets is not None:
        same, visible, last, kept = documents.chunk_masks(resets, n, c)
        decay = decay * same
        visible = visible.unsqueeze(-1)
        k_end, q_start, rhs_k = k_end * last.unsqueeze(-1), q_start * visible, rhs_k * visible
    a = ((beta * k) @ k.transpose(-1, -2) * decay).tril(-1)  # (b, h, n, c, c): A, strictly lower
    # (I + A) W = [diag(β) V, diag(βγ) K]; unitriangular=True supplies the unit diagonal of I + A
    w = torch.linalg.solve_triangular(a, torch.cat((beta * v, rhs_k), dim=-1), upper=False, unitriangular=True)
    scores = q @ k.transpose(-1, -2) * decay  # (b, h, n, c, c): Q Kᵀ ⊙ D
    # everything that does not need S₀, for every chunk at once (W = [W₁, W₂] in each product);
    # the carry is then one multiply-add a chunk
    o_local, p_w2 = (scores @ w).split((dv, dk), dim=-1)  # P W₁ (b, h, n, c, v), P W₂ (b, h, n, c, k)
    local, k_w2 = (k_end.transpose(-1, -2) @ w).split((dv, dk), dim=-1)  # K'ᵀ W₁ (…, k, v), K'ᵀ W₂ (…, k, k)
    eye = torch.eye(dk, dtype=q.dtype, device=q.device)
    carried = None if log_decay is None else g[..., -1].exp()  # (b, h, n): S₀'s decay across the chunk
    if kept is not None:
        carried = kept if carried is None else carried * kept
    transition = (eye if carried is None else eye * carried[..., None, None]) - k_w2  # (b, h, n, k, k)
    starts, s = scan.affine_carry(s, transition, local, dim=2)  # (b, h, n, k, v), (b, h, k, v)
    q_eff = q_start - p_w2  # (b, h, n, c, k)
    out = torch.baddbmm(o_local.reshape(-1, c, dv), q_eff.reshape(-1, c, dk), starts.reshape(-1, dk, dv))
    out = out.reshape(b, h, n * c, dv)[:, :, :t]
    return out.to(dtype), s.to(dtype)


def delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_decay: Tensor | None = None,
    state: Tensor | None = None,
    resets: Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """`chunk_delta_rule`, run by fla's kernel on CUDA where it is installed and allowed (pulse.ops.fla);
    the path taken is recorded in `pulse.ops.backend.paths_taken()` under "delta_rule". With document
    starts it is always the chunked form (fla's kernels take them only as cu_seqlens of one flat row)."""
    from pulse.ops import fla

    if resets is not None:
        backend.record("delta_rule", "eager (document starts)")
        return chunk_delta_rule(q, k, v, beta, log_decay, state, resets, chunk_size=chunk_size)

    def kernel() -> tuple[Tensor, Tensor]:
        s0 = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]) if state is None else state
        return fla.gated_delta_rule(q, k, v, beta, log_decay, s0)

    out = fla.dispatch("delta_rule", q, lambda: fla.probe_delta(q.device, q.dtype, log_decay is not None), kernel)
    if out is not None:
        return out
    return chunk_delta_rule(q, k, v, beta, log_decay, state, chunk_size=chunk_size)
