"""Sparse state attention: each token reads only its top-k slots of a causally written slot bank.

# b batch · t time · d model · s slots · h heads · e head dim · n chunks · c chunk length · k kept slots
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input, no_weight_decay
from pulse.errors import PulseError
from pulse.ops import backend
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.documents import DocStarts, RowStates, per_document, starts_mask, step_mask
from pulse.ops.topk_read import topk_read


class SparseStateAttention(nn.Module):
    """Per head, token t scores every slot, σ_tj = q_t · W_k S_j / √e, keeps its top k, and reads
    y_t = W_o (Σ_{j∈top-k} softmax(σ_t·)_j S_j + conv_w(x)_t), with S as it stood after the previous chunk.
    After each chunk of c tokens the slots are written: S_j += Σ_t softmax_t(σ_·j)_t g_t ⊙ (v_t − S_j),
    g_t = σ(W_g x_t + b_g), v_t = W_v x_t — a gated move of each slot toward the tokens that address it.

    State: the slots, the running write sums of the partial chunk (an online softmax over its
    tokens), and the conv's last w−1 inputs: 2·s·d + 2·h·s + (w−1)·d numbers, whatever the length.
    Cost per token: 8·d² + 2·s·d²/c (projections) + 2·s·d (scoring: s dot products) + 4·s·d (writing)
    + 2·k·d (reading k slots) — O(n·s) scores, O(n·k·d) reads for n tokens. Params: 5·d² + s·d + (w + 2)·d.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_slots: int = 64,
        top_k: int = 8,
        num_heads: int = 4,
        chunk_size: int = 64,
        conv_size: int = 4,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide dim ({dim}); pick a divisor of {dim}.")
        if not 1 <= top_k <= num_slots:
            raise PulseError(f"top_k ({top_k}) must lie in 1..num_slots ({num_slots}).")
        if conv_size < 2:
            raise PulseError(f"conv_size must be ≥ 2, got {conv_size}.")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_slots, self.top_k = dim, num_slots, top_k
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.chunk_size, self.conv_size = chunk_size, conv_size
        self.slots = no_weight_decay(nn.Parameter(torch.empty(num_slots, dim, **factory)))  # learned initial slots
        self.q = nn.Linear(dim, dim, bias=False, **factory)
        self.k = nn.Linear(dim, dim, bias=False, **factory)
        self.v = nn.Linear(dim, dim, bias=False, **factory)
        self.gate = nn.Linear(dim, dim, **factory)
        self.conv_weight = nn.Parameter(torch.empty(dim, conv_size, **factory))
        self.conv_bias = nn.Parameter(torch.zeros(dim, **factory))
        self.out = nn.Linear(dim, dim, bias=False, **factory)
        nn.init.normal_(self.slots, std=1.0)
        nn.init.uniform_(self.conv_weight, -(conv_size**-0.5), conv_size**-0.5)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.slots.device
        dtype = dtype if dtype is not None else self.slots.dtype
        h, s, e = self.num_heads, self.num_slots, self.head_dim
        zeros = lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)  # noqa: E731
        return {
            # every sequence starts from its own copy of the learned initial slots
            "slots": self.slots.to(device=device, dtype=dtype).expand(batch, s, self.dim),
            "acc": zeros(batch, h, s, e),  # Σ_t exp(σ_tj − ref_j) g_t ⊙ (v_t − S_j) over the partial chunk
            "den": zeros(batch, h, s),  # Σ_t exp(σ_tj − ref_j)
            "ref": zeros(batch, h, s),  # the running max the sums are taken relative to
            "conv": zeros(batch, self.conv_size - 1, self.dim),
            "filled": 0,  # tokens of the partial chunk already written into acc/den
        }

    def forward(self, x: Tensor, state: dict[str, Any] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x)
        resets = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)
        if isinstance(state, RowStates) or (resets is not None and bool(resets.any())):
            # a document starts its own chunk grid, so each runs by itself (pulse.ops.documents)
            return per_document(self._forward, x, state, resets)
        return self._forward(x, state)

    def _forward(self, x: Tensor, state: dict[str, Any] | None) -> tuple[Tensor, dict[str, Any]]:
        b, t, d = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        h, e, s, c = self.num_heads, self.head_dim, self.num_slots, self.chunk_size
        local, conv_state = causal_depthwise_conv(x, self.conv_weight, self.conv_bias, state["conv"])
        # align x with the chunk grid: the partial chunk in the state already holds `filled` tokens
        filled = state["filled"]
        total = filled + t
        n = -(-total // c)

        def chunked(z: Tensor) -> Tensor:  # (b, t, d) → (b, h, n, c, e)
            z = F.pad(z, (0, 0, filled, n * c - total))
            return z.view(b, n, c, h, e).permute(0, 3, 1, 2, 4)

        q = chunked(self.q(x)) / math.sqrt(e)
        g = torch.sigmoid(self.gate(x))
        gv, g = chunked(g * self.v(x)), chunked(g)
        pos = torch.arange(n * c, device=x.device).view(n, c, 1)
        valid = (pos >= filled) & (pos < total)  # (n, c, 1): real tokens, not alignment padding

        slots, acc, den, ref = state["slots"], state["acc"], state["den"], state["ref"]
        all_scores, all_slots = [], []
        # on CUDA the chunk step runs compiled (PULSE_COMPILE, pulse.ops.backend); the loop stays eager
        step = backend.step_function(self, "chunk_step", self._chunk_step, x.device)
        # unbind, not indexing: the backward of one unbind is one stack, of n index ops n full-size scatters
        for i, (q_i, gv_i, g_i) in enumerate(zip(q.unbind(2), gv.unbind(2), g.unbind(2))):
            all_slots.append(slots)
            scores, slots, acc, den, ref = step(slots, acc, den, ref, q_i, gv_i, g_i, valid[i], (i + 1) * c <= total)
            all_scores.append(scores)

        # every token reads its top-k slots of the bank as it stood before the token's chunk
        scores = torch.stack(all_scores, dim=2)  # (b, h, n, c, s)
        values = torch.stack(all_slots, dim=1).view(b, n, s, h, e).permute(0, 3, 1, 2, 4)  # (b, h, n, s, e)
        kept, idx = scores.topk(self.top_k, dim=-1)  # (b, h, n, c, k)
        p = kept.softmax(dim=-1)
        read = topk_read(
            values.reshape(b * h * n, s, e), idx.reshape(b * h * n, c, -1), p.reshape(b * h * n, c, -1)
        )
        read = read.view(b, h, n * c, e).transpose(1, 2).reshape(b, n * c, d)[:, filled:total]
        new_state = {"slots": slots, "acc": acc, "den": den, "ref": ref, "conv": conv_state, "filled": total % c}
        return self.out(read + local), new_state

    def _chunk_step(self, slots: Tensor, acc: Tensor, den: Tensor, ref: Tensor, q: Tensor, gv: Tensor, g: Tensor,
                    valid: Tensor, complete: bool) -> tuple[Tensor, ...]:
        """One chunk: its tokens' scores on the slots (b, h, c, s), then the slot → token attention over the
        chunk's valid tokens merged into the running sums (acc, den, ref: an online softmax per slot), and,
        when the chunk is complete, the slots written and the sums reset. Returns (scores, slots, acc, den, ref)."""
        b, s, d = slots.shape
        h, e = self.num_heads, self.head_dim
        heads = slots.view(b, s, h, e).transpose(1, 2)  # (b, h, s, e)
        keys = self.k(slots).view(b, s, h, e).transpose(1, 2)
        scores = q @ keys.transpose(-1, -2)  # (b, h, c, s)
        masked = scores.masked_fill(~valid, float("-inf"))
        top = masked.amax(dim=2)  # (b, h, s)
        new_ref = torch.where(den > 0, torch.maximum(ref, top), top).detach()
        rescale = (ref - new_ref).clamp(max=0).exp()
        w = (masked - new_ref.unsqueeze(2)).exp().transpose(-1, -2)  # (b, h, s, c)
        den = den * rescale + w.sum(-1)
        acc = acc * rescale.unsqueeze(-1) + w @ gv - (w @ g) * heads
        if not complete:
            return scores, slots, acc, den, new_ref
        slots = slots + (acc / den.unsqueeze(-1)).transpose(1, 2).reshape(b, s, d)
        return scores, slots, torch.zeros_like(acc), torch.zeros_like(den), torch.zeros_like(new_ref)

    def step(self, x_t: Tensor, state: dict[str, Any], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        y, state = self.forward(x_t.unsqueeze(1), state, doc_starts=None if rows is None else rows.unsqueeze(1))
        return y.squeeze(1), state

    def flops_per_token(self, seq_len: int) -> float:
        d, s, h, k, w = self.dim, self.num_slots, self.num_heads, self.top_k, self.conv_size
        c = max(1, min(self.chunk_size, seq_len))
        projections = 8.0 * d * d + 2.0 * s * d * d / c
        scoring = 2.0 * s * d + 2.0 * s * h  # s dot products per head, then top-k selection
        writing = 4.0 * s * d + 2.0 * s * h + 4.0 * s * d / c
        reading = 2.0 * k * d + 3.0 * k * h
        return projections + scoring + writing + reading + 2.0 * w * d + 6.0 * d

    def state_numel(self, seq_len: int) -> int:
        return 2 * self.num_slots * self.dim + 2 * self.num_heads * self.num_slots + (self.conv_size - 1) * self.dim

    def param_count(self) -> int:
        d = self.dim
        return 5 * d * d + self.num_slots * d + (self.conv_size + 2) * d
