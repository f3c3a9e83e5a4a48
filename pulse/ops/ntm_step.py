"""One token of the NTM's recurrence with a hand-written backward: one autograd node per token.

Autograd over the plain token step records ~150 nodes per token, and most of its backward time
goes to the nodes, not to arithmetic: every slice, view, expand and split of the step becomes a
node that allocates and copies a gradient. `token_forward` runs the step without autograd and
keeps what the backward needs; `token_backward` is the step's exact vector–Jacobian product;
`TokenStep` joins them into one node. Both are plain tensor functions, so `PULSE_COMPILE` can
compile each of them whole. The reference is `NTMMemory.step_reference` (plain autograd), which
tests/test_zoo_blocks.py compares with, values and gradients, in float64.

Per token (controller GRU with the token's input half precomputed, then the heads):
    gi = x + r W_r,  gh = g + h W_h,  [ρ, z] = σ(gi_rz + gh_rz),  ĥ = tanh(gi_n + ρ gh_n),  h' = ĥ + z (h − ĥ)
    o = raw + h' W_o → keys, softplus (β, γ − 1), sigmoid (g, erase), shift logits, add
    write heads address M, write M' = M ⊙ Π(1 − w eᵀ) + Σ w tanh(a)ᵀ; read heads address M', read r' = w M'

# b batch · N memory rows · M row width · r read heads · w write heads · H controller
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-8  # inside both squared norms of the cosine similarity
FLOOR = 1e-30  # the weighting is clamped here before the log of the sharpening


def _softmax_backward(y: Tensor, dy: Tensor) -> Tensor:
    return y * (dy - (y * dy).sum(-1, keepdim=True))


def _circular_windows(w: Tensor) -> Tensor:
    """(…, N) → (…, N, 3): [w_{i−1}, w_i, w_{i+1}] with indices mod N."""
    return torch.cat((w[..., -1:], w, w[..., :1]), dim=-1).unfold(-1, 3, 1)


def address_forward(memory: Tensor, key: Tensor, beta: Tensor, gate: Tensor, shift_rev: Tensor, gamma: Tensor,
                    prev: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The NTM weighting (content → interpolate → shift → sharpen) and what its backward needs.

    memory (b, N, M); key (b, k, M); beta, gate, gamma (b, k); shift_rev (b, k, 3), the shift
    distribution in the order +1, 0, −1; prev (b, k, N) → (b, k, N)."""
    dots = torch.bmm(key, memory.transpose(1, 2))  # (b, k, N)
    kn = key.square().sum(-1, keepdim=True) + EPS  # (b, k, 1)
    mn = memory.square().sum(-1).unsqueeze(1) + EPS  # (b, 1, N)
    rn = (kn * mn).rsqrt()
    cos = dots * rn
    content = torch.softmax(beta.unsqueeze(-1) * cos, dim=-1)
    g = gate.unsqueeze(-1)
    w = torch.lerp(prev, content, g)
    windows = _circular_windows(w)  # (b, k, N, 3)
    shifted = (windows * shift_rev.unsqueeze(-2)).sum(-1)
    logw = shifted.clamp_min(FLOOR).log()
    out = torch.softmax(gamma.unsqueeze(-1) * logw, dim=-1)
    return out, (key, beta, g, shift_rev, gamma, prev, dots, kn, mn, rn, cos, content, windows, shifted, logw, out)


def address_backward(memory: Tensor, saved: tuple[Tensor, ...], d_out: Tensor) -> tuple[Tensor, ...]:
    """Gradients of `address_forward`'s inputs: memory, key, beta, gate, shift_rev, gamma, prev."""
    key, beta, g, shift_rev, gamma, prev, dots, kn, mn, rn, cos, content, windows, shifted, logw, out = saved
    d_sharp = _softmax_backward(out, d_out)
    d_gamma = (d_sharp * logw).sum(-1)
    d_shifted = torch.where(shifted >= FLOOR, gamma.unsqueeze(-1) * d_sharp / shifted, 0)
    d_shift = (windows * d_shifted.unsqueeze(-1)).sum(-2)  # (b, k, 3)
    # shifted_i = s₊ w_{i−1} + s₀ w_i + s₋ w_{i+1}, so dw_j = s₋ d_{j−1} + s₀ d_j + s₊ d_{j+1}
    d_w = (_circular_windows(d_shifted) * shift_rev.flip(-1).unsqueeze(-2)).sum(-1)
    d_prev = d_w * (1 - g)
    d_gate = (d_w * (content - prev)).sum(-1)
    d_logits = _softmax_backward(content, d_w * g)
    d_beta = (d_logits * cos).sum(-1)
    d_cos = d_logits * beta.unsqueeze(-1)
    d_dots = d_cos * rn
    d_norm = -0.5 * d_cos * dots * rn.pow(3)  # rn = (kn · mn)^(−1/2)
    d_key = torch.baddbmm(2 * key * (d_norm * mn).sum(-1, keepdim=True), d_dots, memory)
    d_memory = torch.baddbmm(2 * memory * (d_norm * kn).sum(1).unsqueeze(-1), d_dots.transpose(1, 2), key)
    return d_memory, d_key, d_beta, d_gate, d_shift, d_gamma, d_prev


def token_forward(x_t: Tensor, gh_t: Tensor, raw_t: Tensor, memory: Tensor, reads: Tensor, h: Tensor, w_prev: Tensor,
                  w_read_in: Tensor, w_hh: Tensor, w_heads: Tensor, sizes: tuple[int, ...]
                  ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], tuple[Any, ...]]:
    """One token: (h', M', reads' (b, r, M), weightings (b, w + r, N): write heads first) and the saved
    tensors (M' is not among them: it is an output, which the autograd node keeps its own way).

    x_t, gh_t (b, 3H): the token's input half and the hidden bias; raw_t (b, P): the heads' bias;
    w_read_in (r·M, 3H), w_hh (H, 3H), w_heads (H, P): weights laid out (in, out), rows of w_heads in
    `NTMMemory._fused_layout` order; sizes: the widths of its five blocks."""
    b, H = h.shape
    r, M = reads.shape[1], reads.shape[2]
    w = w_prev.shape[1] - r
    gi = torch.addmm(x_t, reads.reshape(b, r * M), w_read_in)
    gh = torch.addmm(gh_t, h, w_hh)
    rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
    cand = torch.tanh(torch.addcmul(gi[:, 2 * H :], rz[:, :H], gh[:, 2 * H :]))
    h_new = torch.lerp(cand, h, rz[:, H:])
    keys, sp, sg, shift, add = torch.addmm(raw_t, h_new, w_heads).split(sizes, dim=-1)
    keys = keys.view(b, w + r, M)
    beta, gamma = F.softplus(sp).view(b, 2, w + r).unbind(1)
    gamma = gamma + 1
    sg = torch.sigmoid(sg)
    gate, erase = sg[:, : w + r], sg[:, w + r :].view(b, w, M)
    shift = torch.softmax(shift.view(b, w + r, 3), dim=-1)
    add = torch.tanh(add).view(b, w, M)
    # write heads address the memory the previous token left, read heads the one just written
    w_write, saved_write = address_forward(memory, keys[:, :w], beta[:, :w], gate[:, :w], shift[:, :w], gamma[:, :w],
                                           w_prev[:, :w])
    factors = 1 - w_write.unsqueeze(-1) * erase.unsqueeze(-2)  # (b, w, N, M)
    keep = factors.prod(dim=1)
    written = torch.baddbmm(memory * keep, w_write.transpose(1, 2), add)
    w_read, saved_read = address_forward(written, keys[:, w:], beta[:, w:], gate[:, w:], shift[:, w:], gamma[:, w:],
                                         w_prev[:, w:])
    reads_new = torch.bmm(w_read, written)
    saved = (memory, reads, h, gh, rz, cand, sp, sg, shift, add, erase, factors, keep, w_write, w_read, saved_write,
             saved_read)
    return (h_new, written, reads_new, torch.cat((w_write, w_read), dim=1)), saved


def token_backward(saved: tuple[Any, ...], written: Tensor, w_read_in: Tensor, w_hh: Tensor, w_heads: Tensor,
                   d_h: Tensor, d_memory: Tensor, d_reads: Tensor, d_weights: Tensor) -> tuple[Tensor, ...]:
    """The vector–Jacobian product of `token_forward` (written: its M'): gradients of x_t, gh_t, raw_t,
    memory, reads, h, w_prev."""
    memory, reads, h, gh, rz, cand, sp, sg, shift, add, erase, factors, keep, w_write, w_read, saved_write, saved_read \
        = saved
    H = h.shape[1]
    w = w_write.shape[1]
    # read: reads' = w_read M', then the read heads' addressing of M'
    d_w_read = torch.baddbmm(d_weights[:, w:], d_reads, written.transpose(1, 2))
    d_written = torch.baddbmm(d_memory, w_read.transpose(1, 2), d_reads)
    dm, dk_r, db_r, dg_r, ds_r, dgam_r, dprev_r = address_backward(written, saved_read, d_w_read)
    d_written = d_written + dm
    # write: M' = M ⊙ Π_heads (1 − w eᵀ) + Σ_heads w aᵀ
    d_keep = d_written * memory
    if w == 1:
        d_factors = d_keep.unsqueeze(1)
    else:
        d_factors = torch.stack([d_keep * torch.cat((factors[:, :i], factors[:, i + 1 :]), dim=1).prod(dim=1)
                                 for i in range(w)], dim=1)  # (b, w, N, M): each factor times the others
    d_w_write = torch.baddbmm(
        d_weights[:, :w] - (d_factors * erase.unsqueeze(-2)).sum(-1), add, d_written.transpose(1, 2)
    )
    d_erase = -(d_factors * w_write.unsqueeze(-1)).sum(-2)
    d_add = torch.bmm(w_write, d_written) * (1 - add.square())
    dm, dk_w, db_w, dg_w, ds_w, dgam_w, dprev_w = address_backward(memory, saved_write, d_w_write)
    d_mem_in = d_written * keep + dm
    # the heads' raw outputs, block by block as `_fused_layout` orders them
    d_sp = torch.cat((db_w, db_r, dgam_w, dgam_r), dim=-1) * torch.sigmoid(sp)
    d_sg = torch.cat((dg_w, dg_r, d_erase.flatten(1)), dim=-1) * sg * (1 - sg)
    d_shift = _softmax_backward(shift, torch.cat((ds_w, ds_r), dim=1)).flatten(1)
    d_raw = torch.cat((torch.cat((dk_w, dk_r), dim=1).flatten(1), d_sp, d_sg, d_shift, d_add.flatten(1)), dim=-1)
    # controller: h' = ĥ + z (h − ĥ), ĥ = tanh(gi_n + ρ gh_n), [ρ, z] = σ(gi_rz + gh_rz)
    d_h_new = torch.addmm(d_h, d_raw, w_heads.t())
    reset, z = rz[:, :H], rz[:, H:]
    d_pre_n = d_h_new * (1 - z) * (1 - cand.square())
    d_rz = torch.cat((d_pre_n * gh[:, 2 * H :], d_h_new * (h - cand)), dim=-1) * rz * (1 - rz)
    d_gi = torch.cat((d_rz, d_pre_n), dim=-1)
    d_gh = torch.cat((d_rz, d_pre_n * reset), dim=-1)
    d_reads_in = torch.mm(d_gi, w_read_in.t()).view_as(reads)
    d_h_in = torch.addmm(d_h_new * z, d_gh, w_hh.t())
    return d_gi, d_gh, d_raw, d_mem_in, d_reads_in, d_h_in, torch.cat((dprev_w, dprev_r), dim=1)


class TokenStep(torch.autograd.Function):
    """`token_forward` as one autograd node whose backward is `token_backward` (either may be compiled).

    apply(forward_fn, backward_fn, sizes, x_t, gh_t, raw_t, memory, reads, h, w_prev, w_read_in, w_hh, w_heads);
    the weights arrive detached: their gradients are taken after the loop (`NTMMemory._run`)."""

    @staticmethod
    def forward(ctx, forward_fn: Callable, backward_fn: Callable, sizes: tuple[int, ...], *tensors: Tensor):
        outputs, saved = forward_fn(*tensors, sizes)
        # inputs and intermediates are kept as attributes; the output M' through save_for_backward,
        # which does not tie the output to its own node in a reference cycle
        ctx.save_for_backward(outputs[1])
        ctx.backward_fn, ctx.saved, ctx.weights = backward_fn, saved, tensors[-3:]
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_h, d_memory, d_reads, d_weights):
        (written,) = ctx.saved_tensors
        grads = ctx.backward_fn(ctx.saved, written, *ctx.weights, d_h, d_memory, d_reads, d_weights)
        return None, None, None, *grads, None, None, None
