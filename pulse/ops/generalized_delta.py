"""The generalized delta rule: a state transition that is a diagonal plus a rank-one term per token.

    S_t = (Diag(w_t) + a_t b_tᵀ) S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ q_t          (S ∈ ℝ^{k×v} per head)

with a per-channel decay w_t ∈ (0, 1]^k (given as log w_t ≤ 0). In PULSE's convention b is the
direction the state is read along (u_t = b_tᵀ S_{t−1}, a v-vector) and a the direction that read
is written back along (a_t u_tᵀ). fla's diagonal-plus-low-rank kernel (`chunk_rwkv7`) names them
the other way round, S_t = Diag(w_t) S_{t−1} + b_t (a_tᵀ S_{t−1}) + k_t v_tᵀ: fla's a is PULSE's b
and fla's b is PULSE's a, so `pulse.ops.fla.dplr` passes (b, a). It covers

- KDA (Kimi Delta Attention): S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ, i.e.
  w = α, a = −β k, b = k ⊙ α, and the write β k;
- Gated DeltaNet: the same with α_t a scalar per head (`pulse.ops.delta_rule` is its faster form);
- RWKV-7, whose state is v × k: transposed to this k × v layout its transition is
  Diag(w_t) − (κ̂_t ⊙ a_t) κ̂_tᵀ (a_t its in-context learning rate), i.e. a = κ̂ ⊙ a_t, b = −κ̂
  (`pulse.blocks.mixers.rwkv7`); fla's RWKV-7 layer writes the same as its a = −κ̂, b = κ̂ ⊙ a_t.

`chunk_generalized_delta` is the chunkwise form. In a chunk of c tokens with state S₀ at its start,
g_i the per-channel cumulative log-decay from the chunk start (g_{i−1} before token i) and u_i =
b_iᵀ S_{i−1} the rank-one term's read,

    S_i = e^{g_i} ⊙ S₀ + Σ_{j≤i} (e^{g_i − g_j} ⊙ a_j) u_jᵀ + Σ_{j≤i} (e^{g_i − g_j} ⊙ k_j) v_jᵀ
    u_i = (b_i ⊙ e^{g_{i−1}})ᵀ S₀ + Σ_{j<i} A_ij u_j + Σ_{j<i} B_ij v_j,
          A_ij = Σ_c b_ic a_jc e^{g_{i−1,c} − g_jc},  B_ij = Σ_c b_ic k_jc e^{g_{i−1,c} − g_jc}

so (I − A) U = B V + (B' ⊙ e^{g_prev}) S₀: one unit lower triangular solve per chunk gives
U = W₁ + W₂ S₀ for every chunk at once, independent of S₀; the outputs O = P_a U + P_k V + (Q ⊙ e^g) S₀
(P_a, P_k the same pair sums with q_i and e^{g_i − g_j}, j ≤ i) and the chunk-end state
S_c = (Diag(e^{g_c}) + A'ᵀ W₂) S₀ + A'ᵀ W₁ + K'ᵀ V are affine in S₀, so the carry is the delta
rule's: one batched multiply-add per chunk on the CPU, log depth elsewhere
(`pulse.ops.scan.affine_carry`). The per-channel decays enter only as e^{g_x − g_j} with x ≥ j. They
are factored, e^{g_x} · e^{−g_j}, so the four pair sums are one (2c × k)(k × 2c) product per chunk;
e^{−g_j} grows with the decay since the chunk start, so a chunk whose decay passes e^{−40} (float32;
e^{−400} in float64) is summed pairwise instead, a (c, c, k) tensor with every exponent ≤ 0: nothing
overflows however strong the decay, and mild decays (RWKV-7's are at most 0.61 nats a token) never
leave the fast form. Where more than an eighth of the chunks would, the chunks are halved (down to
4 tokens) first (`_chunk_for`).

Document starts (`resets`, (b, t) bool; `pulse.ops.documents`) zero the state before their token:
pairs across a start are masked out, only tokens before the chunk's first start read S₀, only the
chunk's last document enters S_c, and S₀ passes a chunk only if nothing starts in it.

`recurrent_generalized_delta` is the per-token loop it must agree with (values and gradients).

# b batch · h heads · t time · n chunks · c chunk length · k key dim · v value dim
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import backend, documents, scan

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FACTOR_LIMIT = {torch.float32: 40.0, torch.float64: 400.0}  # largest −g (chunk log decay) factored


def recurrent_generalized_delta(
    q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference. q, k, a, b, log_w (≤ 0): (b, h, t, k); v: (b, h, t, v); state: (b, h, k, v) or None for
    zeros; resets: (b, t) bool or None. Returns o (b, h, t, v) and the state after the last token."""
    s = q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1]) if state is None else state
    outs = []
    for i in range(q.shape[2]):
        if resets is not None:
            s = s.masked_fill(resets[:, i, None, None, None], 0)
        read = torch.einsum("bhk,bhkv->bhv", b[:, :, i], s)  # u_i = b_iᵀ S_{i−1}
        s = log_w[:, :, i].exp().unsqueeze(-1) * s + a[:, :, i].unsqueeze(-1) * read.unsqueeze(-2)
        s = s + k[:, :, i].unsqueeze(-1) * v[:, :, i].unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, i], s))
    return torch.stack(outs, dim=2), s


def chunk_generalized_delta(
    q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None, *, chunk_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """Chunkwise form of `recurrent_generalized_delta`; same arguments, same results. Half precision is
    computed in float32 (the triangular solve needs it) and cast back."""
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v, a, b, log_w = (x.float() for x in (q, k, v, a, b, log_w))
        state = None if state is None else state.float()
    bsz, h, t, dk = q.shape
    dv = v.shape[-1]
    s0 = q.new_zeros(bsz, h, dk, dv) if state is None else state
    c = _chunk_for(log_w, max(1, min(chunk_size, t)))
    n = -(-t // c)
    pad = n * c - t
    if pad:  # padded tokens: decay 1, nothing written, nothing read, no rank-one term
        q, k, v, a, b, log_w = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, a, b, log_w))
    q, k, a, b, log_w = (x.reshape(bsz, h, n, c, dk) for x in (q, k, a, b, log_w))
    v = v.reshape(bsz, h, n, c, dv)
    g = log_w.cumsum(dim=-2)  # (b, h, n, c, k): log decay from the chunk start through token i
    g_prev = g - log_w  # … through token i − 1
    ones = torch.ones(c, c, dtype=torch.bool, device=q.device)
    before, upto = ones.tril(-1), ones.tril()  # j < i, j ≤ i
    start_read, start_out, end_a, end_k = b * g_prev.exp(), q * g.exp(), a * (g[..., -1:, :] - g).exp(), \
        k * (g[..., -1:, :] - g).exp()
    kept = None
    if resets is not None:
        same, visible, last, kept = documents.chunk_masks(resets, n, c)
        before, upto = before & same, upto & same  # (b, 1, n, c, c): pairs of one document only
        visible, last = visible.unsqueeze(-1), last.unsqueeze(-1)
    A, B, P_a, P_k = _pair_sums(q, k, a, b, g, g_prev, start_read, start_out, before, upto)
    if resets is not None:
        start_read, start_out, end_a, end_k = start_read * visible, start_out * visible, end_a * last, end_k * last
    # (I − A) U = B V + start_read S₀  →  U = W₁ + W₂ S₀
    w = torch.linalg.solve_triangular(-A, torch.cat((B @ v, start_read), dim=-1), upper=False,
                                      unitriangular=True)
    w1, w2 = w.split((dv, dk), dim=-1)  # (…, c, v), (…, c, k)
    local = end_a.transpose(-1, -2) @ w1 + end_k.transpose(-1, -2) @ v  # (b, h, n, k, v)
    decay_end = g[..., -1, :].exp()  # (b, h, n, k)
    if kept is not None:
        decay_end = decay_end * kept.unsqueeze(-1)
    transition = torch.diag_embed(decay_end) + end_a.transpose(-1, -2) @ w2  # (b, h, n, k, k)
    starts, s = scan.affine_carry(s0, transition, local, dim=2)
    out = P_a @ w1 + P_k @ v + (start_out + P_a @ w2) @ starts  # (b, h, n, c, v)
    return out.reshape(bsz, h, n * c, dv)[:, :, :t].to(dtype), s.to(dtype)


def _chunk_for(log_w: Tensor, c: int) -> int:
    """The chunk length to run at: `c`, halved (not below 4) while more than an eighth of the chunks (per row and
    head) would decay past the factored form's range, whose pairwise sums cost about c times more. Strong decays
    (KDA after training at a high learning rate) then stay factored in shorter chunks; results do not change."""
    if log_w.device.type == "meta":
        return c
    limit = _FACTOR_LIMIT.get(log_w.dtype, _FACTOR_LIMIT[torch.float32])
    t = log_w.shape[-2]
    while c > 4:
        n = -(-t // c)
        totals = F.pad(log_w, (0, 0, 0, n * c - t)).unflatten(-2, (n, c)).sum(-2).amin(-1)  # (b, h, n)
        if float((totals < -limit).float().mean()) <= 0.125:
            break
        c //= 2
    return c


def _pair_sums(q: Tensor, k: Tensor, a: Tensor, b: Tensor, g: Tensor, g_prev: Tensor, rows_b: Tensor,
               rows_q: Tensor, before: Tensor, upto: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A, B (pairs j < i, rows read with b) and P_a, P_k (pairs j ≤ i, rows read with q), each
    Σ_c x_ic y_jc e^{g_x,ic − g_jc} per chunk: (b, h, n, c, c).

    Factored, e^{g_x,i − g_j} = e^{g_x,i} · e^{−g_j}, it is one product per chunk, [b e^{g_prev}; q e^{g}]
    [a e^{−g}; k e^{−g}]ᵀ. e^{−g_j} grows with the decay since the chunk start, so chunks whose decay
    passes `_FACTOR_LIMIT` (e^{−40} in float32: strong, rare decays) take the pairwise form instead,
    with every exponent ≤ 0; the factored values of those chunks (from a clamped g, finite) are replaced.
    """
    c = q.shape[-2]
    limit = _FACTOR_LIMIT[g.dtype]
    cols = torch.cat((a, k), dim=-2) * (-torch.cat((g, g), dim=-2).clamp(min=-limit)).exp()
    sums = torch.cat((rows_b, rows_q), dim=-2) @ cols.transpose(-1, -2)  # (b, h, n, 2c, 2c)
    A, B, P_a, P_k = sums[..., :c, :c], sums[..., :c, c:], sums[..., c:, :c], sums[..., c:, c:]
    strong = g[..., -1, :].amin(-1) < -limit  # (b, h, n): chunks the factored form cannot take
    if g.device.type != "meta" and bool(strong.any()):  # meta tensors (summaries) hold no values
        at = strong.nonzero(as_tuple=True)
        lower = lambda m: m.expand(*strong.shape, c, c)[at]  # noqa: E731
        gs, gps = g[at], g_prev[at]
        e_prev = (gps.unsqueeze(-2) - gs.unsqueeze(-3)).masked_fill(~lower(before)[..., None], -math.inf).exp()
        e_out = (gs.unsqueeze(-2) - gs.unsqueeze(-3)).masked_fill(~lower(upto)[..., None], -math.inf).exp()
        pair = lambda x, y, e: torch.einsum("...ic,...jc,...ijc->...ij", x[at], y[at], e)  # noqa: E731
        A, B = A.index_put(at, pair(b, a, e_prev)), B.index_put(at, pair(b, k, e_prev))
        P_a, P_k = P_a.index_put(at, pair(q, a, e_out)), P_k.index_put(at, pair(q, k, e_out))
    zero = torch.zeros((), dtype=A.dtype, device=A.device)
    return (torch.where(before, A, zero), torch.where(before, B, zero), torch.where(upto, P_a, zero),
            torch.where(upto, P_k, zero))


def generalized_delta(
    q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None, *, chunk_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """`chunk_generalized_delta`, run by fla's diagonal-plus-low-rank kernel (`chunk_rwkv7`) on CUDA where
    it is installed and allowed (pulse.ops.fla); the path is recorded under "generalized_delta" in
    `pulse.ops.backend.paths_taken()`. With document starts it is always the chunked form."""
    if resets is not None:
        backend.record("generalized_delta", "eager (document starts)")
        return chunk_generalized_delta(q, k, v, a, b, log_w, state, resets, chunk_size=chunk_size)
    from pulse.ops import fla

    def kernel() -> tuple[Tensor, Tensor]:
        return fla.dplr(q, k, v, a, b, log_w, _zeros_or(state, q, v))

    out = fla.dispatch("generalized_delta", q, lambda: fla.probe_generalized(q.device, q.dtype, "dplr"), kernel)
    return out if out is not None else chunk_generalized_delta(q, k, v, a, b, log_w, state, chunk_size=chunk_size)


def kda_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor, state: Tensor | None = None,
    resets: Tensor | None = None, *, chunk_size: int = 16,
) -> tuple[Tensor, Tensor]:
    """KDA's rule S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ (q, k, log α (b, h, t, k), v
    (b, h, t, v), β (b, h, t)): fla's `chunk_kda` on CUDA where installed and allowed, else the generalized
    rule with w = α, a = −β k, b = k ⊙ α and the write β k. Recorded under "kda"."""
    bk = beta.unsqueeze(-1) * k

    def eager() -> tuple[Tensor, Tensor]:
        return chunk_generalized_delta(q, bk, v, -bk, k * log_alpha.exp(), log_alpha, state, resets,
                                       chunk_size=chunk_size)

    if resets is not None:
        backend.record("kda", "eager (document starts)")
        return eager()
    from pulse.ops import fla

    def kernel() -> tuple[Tensor, Tensor]:
        return fla.kda(q, k, v, beta, log_alpha, _zeros_or(state, q, v))

    out = fla.dispatch("kda", q, lambda: fla.probe_generalized(q.device, q.dtype, "kda"), kernel)
    return out if out is not None else eager()


def _zeros_or(state: Tensor | None, q: Tensor, v: Tensor) -> Tensor:
    return q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]) if state is None else state
