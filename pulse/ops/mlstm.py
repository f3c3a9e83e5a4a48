"""xLSTM's mLSTM cell (Beck et al. 2024): a matrix memory with exponential input gating and a normaliser.

Per head, with the log input gate ĩ_t (the pre-activation: i_t = e^{ĩ_t}) and the log forget gate f̃_t
(log σ of its pre-activation for xLSTM's sigmoid forget gate, the pre-activation itself for an
exponential one), the memory C ∈ ℝ^{k×v}, the normaliser n ∈ ℝ^k and the stabiliser m:

    m_t = max(f̃_t + m_{t−1}, ĩ_t)
    C_t = e^{f̃_t + m_{t−1} − m_t} C_{t−1} + e^{ĩ_t − m_t} k_t v_tᵀ
    n_t = e^{f̃_t + m_{t−1} − m_t} n_{t−1} + e^{ĩ_t − m_t} k_t
    h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + ε),   q̂_t = q_t / √k

C and n are kept divided by e^{m_t} (the true memory is e^{m_t} C_t), so no exponential overflows;
m cancels from h except in ε e^{m_t} (h = C̄ᵀq̂ / (max(|n̄ᵀq̂|, 1) + ε e^{m_t}) in true units), which
is why the chunked form computes the very same m_t as the recurrence. The state starts at
C = 0, n = 0, m = 0. `resets` (b, t) bool marks document starts, where (C, n, m) start again from
(0, 0, 0). This is exactly Transformers' `xlstm` reference (`mlstm_recurrent_step_native`, and its
chunkwise kernel `mlstm_chunkwise_native_autograd`, whose m is this m too); tests/test_mlstm.py
holds them to it.

`chunk_mlstm` is the chunkwise form: within a chunk of c tokens, with b_i the cumulative log
forget gate from the chunk start and D_ij = b_i − b_j + ĩ_j (j ≤ i, one document),

    m_i = max(b_i + m₀, max_j D_ij),   h_i ∝ e^{b_i + m₀ − m_i} q̂_iᵀ [C₀ | n₀] + Σ_j e^{D_ij − m_i} (q̂_i·k_j) [v_j | 1]

and the chunk-end state is the last row's: only the stabilisers m₀ of the chunks are carried one
after another (a loop over scalars), then [C | n] by `pulse.ops.scan.carry` with decays ≤ 1.
n rides along C as one more value column ([v | 1]). `mlstm_reference` is the per-token loop it
must agree with (values and gradients), `mlstm_step` one token of it.

# b batch · h heads · t time · n chunks · c chunk length · k key (query) head dim · v value head dim
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pulse.ops import documents, scan

MLSTMState = tuple[Tensor, Tensor, Tensor]  # C (b, h, k, v), n (b, h, k), m (b, h)


def initial_state(b: int, h: int, k: int, v: int, *, device=None, dtype=None) -> MLSTMState:
    """(C, n, m) = (0, 0, 0): the state before the first token."""
    return (torch.zeros(b, h, k, v, device=device, dtype=dtype), torch.zeros(b, h, k, device=device, dtype=dtype),
            torch.zeros(b, h, device=device, dtype=dtype))


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor, state: MLSTMState, *,
               eps: float = 1e-6, scale: float | None = None) -> tuple[Tensor, MLSTMState]:
    """One token. q, k: (b, h, k); v: (b, h, v); log_i, log_f: (b, h). Returns h (b, h, v) and the state."""
    C, n, m = state
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    m_new = torch.maximum(log_f + m, log_i)
    keep, write = (log_f + m - m_new).exp(), (log_i - m_new).exp()
    C = keep[..., None, None] * C + write[..., None, None] * (k.unsqueeze(-1) * v.unsqueeze(-2))
    n = keep[..., None] * n + write[..., None] * k
    qs = q * scale
    num = (qs.unsqueeze(-2) @ C).squeeze(-2)
    den = (qs * n).sum(-1).abs().maximum((-m_new).exp()) + eps
    return num / den.unsqueeze(-1), (C, n, m_new)


def mlstm_reference(q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor, state: MLSTMState | None = None,
                    resets: Tensor | None = None, *, eps: float = 1e-6, scale: float | None = None
                    ) -> tuple[Tensor, MLSTMState]:
    """Reference: the recurrence token by token. q, k: (b, h, t, k); v: (b, h, t, v); log_i, log_f: (b, h, t);
    state: (C, n, m) or None for zeros; resets: (b, t) bool or None. Returns h (b, h, t, v) and the state."""
    b, h, t, dk = q.shape
    if state is None:
        state = initial_state(b, h, dk, v.shape[-1], device=q.device, dtype=q.dtype)
    outs = []
    for i in range(t):
        if resets is not None:
            row = resets[:, i]
            state = tuple(s.masked_fill(row.view(-1, *(1,) * (s.ndim - 1)), 0) for s in state)
        out, state = mlstm_step(q[:, :, i], k[:, :, i], v[:, :, i], log_i[:, :, i], log_f[:, :, i], state,
                                eps=eps, scale=scale)
        outs.append(out)
    return torch.stack(outs, dim=2), state


def chunk_mlstm(q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor, state: MLSTMState | None = None,
                resets: Tensor | None = None, *, chunk_size: int = 64, eps: float = 1e-6, scale: float | None = None
                ) -> tuple[Tensor, MLSTMState]:
    """The chunkwise form of `mlstm_reference`; same arguments, same results. Half precision runs in float32."""
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v, log_i, log_f = (z.float() for z in (q, k, v, log_i, log_f))
        state = None if state is None else tuple(s.float() for s in state)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    C0, n0, m0 = initial_state(b, h, dk, dv, device=q.device, dtype=q.dtype) if state is None else state
    scale = dk ** -0.5 if scale is None else scale
    c = max(1, min(chunk_size, t))
    nc = -(-t // c)
    pad = nc * c - t
    v1 = torch.cat((v, v.new_ones(b, h, t, 1)), dim=-1)  # [v | 1]: n rides along C as one more column
    if pad:  # padded tokens: forget gate 1 (log 0), input gate 0 (log −∞), zero q, k, v: they change nothing
        q, k, v1 = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v1))
        log_f, log_i = F.pad(log_f, (0, pad)), F.pad(log_i, (0, pad), value=float("-inf"))
    q, k, v1 = q.reshape(b, h, nc, c, dk) * scale, k.reshape(b, h, nc, c, dk), v1.reshape(b, h, nc, c, dv + 1)
    log_i, log_f = log_i.reshape(b, h, nc, c), log_f.reshape(b, h, nc, c)
    cum = log_f.cumsum(dim=-1)  # b_i: log forget from the chunk start through i
    pairs = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    since = cum  # log forget from the start of i's document in the chunk (or the chunk start) through i
    visible = kept = None
    if resets is not None:
        same, visible, _, kept = documents.chunk_masks(resets, nc, c)
        pairs = pairs & same
        since = cum - _before_first(cum - log_f, resets, nc, c)
    logD = (cum.unsqueeze(-1) - cum.unsqueeze(-2) + log_i.unsqueeze(-2)).masked_fill(~pairs, float("-inf"))
    top = logD.amax(dim=-1)  # (b, h, n, c): the largest intra-chunk weight of each row
    m_start, m_end = _stabilisers(m0, cum[..., -1], since[..., -1], top[..., -1], kept)
    across = (cum[..., -1] + m_start - m_end)  # log decay of the carried [C | n] over each chunk, ≤ 0
    if kept is not None:
        across = across.masked_fill(~kept, float("-inf"))
    write = (logD[..., -1, :] - m_end.unsqueeze(-1)).exp()  # (b, h, n, c): each token's weight in the chunk end
    local = (k * write.unsqueeze(-1)).transpose(-1, -2) @ v1  # (b, h, n, k, v + 1)
    starts, C_last = scan.carry(torch.cat((C0, n0.unsqueeze(-1)), dim=-1), local, across.exp()[..., None, None])
    from_start = since + m_start.unsqueeze(-1) if visible is None else since + m_start.unsqueeze(-1) * visible
    m = torch.maximum(from_start, top)  # (b, h, n, c): m_i, as the recurrence has it
    read = (from_start - m).exp()
    if visible is not None:
        read = read * visible
    out = (q * read.unsqueeze(-1)) @ starts + ((q @ k.transpose(-1, -2)) * (logD - m.unsqueeze(-1)).exp()) @ v1
    num, qn = out[..., :dv], out[..., dv]
    hidden = num / (qn.abs().maximum((-m).exp()) + eps).unsqueeze(-1)
    C, n = C_last[..., :dv], C_last[..., dv]
    return hidden.reshape(b, h, nc * c, dv)[:, :, :t].to(dtype), (C.to(dtype), n.to(dtype), m_end[..., -1].to(dtype))


def _before_first(exclusive: Tensor, resets: Tensor, nc: int, c: int) -> Tensor:
    """(b, h, n, c): the exclusive cumulative log forget (b_{s−1}) at the start s of each token's document in the
    chunk, 0 where no document starts in the chunk at or before the token."""
    b = resets.shape[0]
    mask = F.pad(resets, (0, nc * c - resets.shape[1])).view(b, 1, nc, c)
    pos = torch.arange(c, device=resets.device).expand_as(mask)
    first = torch.where(mask, pos, torch.zeros_like(pos)).cummax(dim=-1).values
    return exclusive.gather(-1, first.expand_as(exclusive))


def _stabilisers(m0: Tensor, g: Tensor, fresh: Tensor, inner: Tensor, kept: Tensor | None) -> tuple[Tensor, Tensor]:
    """The stabiliser m before and after each chunk, (b, h, n) each, one chunk after another (scalars only).

    After a chunk, m is its last row's: max(g + m₀, A) where the carried state survives the chunk (g: its log
    forget), else A, with A the last row's largest intra-chunk weight (`inner`) or, after a document start, the
    fresh state's term (`fresh`: the log forget since that start), whichever is larger."""
    if kept is not None:
        inner = torch.where(kept, inner, torch.maximum(inner, fresh))
    before, after = [], []
    m = m0
    for j in range(g.shape[-1]):
        before.append(m)
        m_next = torch.maximum(g[..., j] + m, inner[..., j])
        m = m_next if kept is None else torch.where(kept[..., j], m_next, inner[..., j])
        after.append(m)
    return torch.stack(before, dim=-1), torch.stack(after, dim=-1)
