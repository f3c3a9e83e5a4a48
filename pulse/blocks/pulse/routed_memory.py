"""PULSE's routed memory: a router sends each token into the top-k of M delta-rule memories.

# b batch · t time · d model · h heads · k key head dim · v value head dim · w conv width
# M routed memories · n = M + 1 memories with the shared one (M without) · K = h·k, V = h·v
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.mixers.decay import decay_parameters, init_decay_
from pulse.blocks.mixers.deltanet import GatedDeltaNet
from pulse.errors import PulseError
from pulse.ops import routing
from pulse.ops.causal_conv import causal_depthwise_conv
from pulse.ops.delta_rule import delta_rule, recurrent_delta_rule
from pulse.ops.documents import DocStarts


class RoutedDeltaMemory(GatedDeltaNet):
    """The seed's router into a bank of states, on the frontier's memories (Mixture-of-Memories, Du et
    al. 2025): M memories, each per head a k × v fast-weight matrix written by the gated delta rule
    with its own key and value projections, plus (`shared`) one memory every token writes.

        p_t = softmax(W_r x_t) ∈ Δ^M,   R_t = top-k(p_t),   g_{t,m} = p_{t,m}  (m ∈ R_t; gate "softmax")
                                                            g_{t,m} = p_{t,m} / Σ_{m'∈R_t} p_{t,m'}  ("renormalized")
        for each memory m:  k_m, v_m = silu(conv(W_k^m x)), silu(conv(W_v^m x));  q shared by the memories
        S_{m,t} = α_{m,t} (I − β_{m,t} k k ᵀ) S_{m,t−1} + β_{m,t} k v ᵀ   if m ∈ R_t (or m is the shared memory)
        S_{m,t} = S_{m,t−1}                                                otherwise (no write, no decay)
        o_t = Σ_{m∈R_t} g_{t,m} S_{m,t}ᵀ q_t + S_{0,t}ᵀ q_t,   y_t = W_o (rmsnorm(o_t) ⊙ silu(W_g x_t))

    A memory a token is not routed to is left untouched (β = 0 and α = 1 for it), so capacity grows
    with M while each token writes k + 1 memories. The router learns only through the gates g (the
    top-k choice itself has no gradient, as in MoM and mixture-of-experts layers): with gate "softmax"
    (Switch-style, the default) g is the probability itself and carries a gradient at every top_k;
    with "renormalized" (MoM's, and every checkpoint stored before the field existed) the gates of the
    chosen memories sum to one, so at top_k = 1 g ≡ 1 and the router gets no gradient at all (it only
    learns at top_k ≥ 2, through the split between the chosen memories). The router runs in the
    input's precision (float32 at least). In `forward` the shared memory runs over every token and
    each routed memory over only the tokens routed to it,
    gathered into one run in order (`pulse.ops.routing`; all M runs as one batched chunkwise delta
    rule, `pulse.ops.delta_rule`) — the same recurrence, since a memory is neither read nor changed
    at the other tokens; `step` is the recurrence over all n memories with the unchosen ones held.
    The projections and convs run on every token for every memory (a key's conv reads its memory's
    projections of the tokens just before, routed there or not).

    State: conv inputs (w−1)·(K + n·(K + V)) and n·h·k·v numbers, whatever the length.
    Cost per token: 2·d·(K + n·(K + V) + V + 2·n·h + M) + 2·V·d (projections) + 2·w·(K + n·(K + V)) (conv)
    + (s + top_k)·[c·(5K + 3V) + 6·h·k·v] (the memories a token is in, s = 1 with the shared one;
    balanced routing, the runs pad to the busiest memory) + 12·(K + n·(K + V)) + 4·M.
    Params: d·(K + n·(K + V) + V + 2·n·h + M) + V·d + w·(K + n·(K + V)) + v + 2·n·h.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_memories: int = 4,
        top_k: int = 2,
        gate: str = "softmax",
        shared: bool = True,
        num_heads: int = 4,
        head_dim: int = 32,
        expand_v: float = 2.0,
        conv_size: int = 4,
        chunk_size: int = 64,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        if num_memories < 1 or not 1 <= top_k <= num_memories:
            raise PulseError(f"pulse_routed needs num_memories ≥ 1 and 1 ≤ top_k ≤ num_memories; got num_memories="
                             f"{num_memories}, top_k={top_k}.")
        if gate not in ("softmax", "renormalized"):
            raise PulseError(f"pulse_routed's gate is \"softmax\" or \"renormalized\"; got {gate!r}.")
        super().__init__(dim, num_heads=num_heads, head_dim=head_dim, expand_v=expand_v, conv_size=conv_size,
                         chunk_size=chunk_size, eps=eps, device=device, dtype=dtype)
        factory = {"device": device, "dtype": dtype}
        self.num_memories, self.top_k, self.gate, self.shared = num_memories, top_k, gate, shared
        n, h, K, V = num_memories + int(shared), num_heads, self.key_width, self.value_width
        self.banks = n
        # q, n keys, n values, the output gate, n βs, n decay inputs, the router's M logits
        self.in_proj = nn.Linear(dim, K + n * (K + V) + V + 2 * n * h + num_memories, bias=False, **factory)
        self.conv_weight = nn.Parameter(torch.empty(K + n * (K + V), conv_size, **factory))
        self.A_log, self.dt_bias = decay_parameters(n * h, **factory)
        with torch.no_grad():
            bound = 1 / math.sqrt(conv_size)
            self.conv_weight.uniform_(-bound, bound)
        init_decay_(self.A_log, self.dt_bias, a_min=1e-4)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        state = super().init_state(batch, device=device, dtype=dtype)
        state["kv"] = state["kv"].repeat(1, self.banks, 1, 1)  # (b, n·h, k, v): memory-major
        return state

    def _check_state(self, state: object, batch: int) -> None:
        kv = state.get("kv") if isinstance(state, dict) else None
        conv = state.get("conv") if isinstance(state, dict) else None
        n, h = self.banks, self.num_heads
        if not isinstance(kv, Tensor) or not isinstance(conv, Tensor) \
                or tuple(kv.shape) != (batch, n * h, self.head_dim, self.head_v) \
                or tuple(conv.shape) != (batch, self.conv_size - 1, self.conv_weight.shape[0]):
            raise PulseError(f"RoutedDeltaMemory got a state that does not fit a batch of {batch}; pass the state "
                             "its forward or init_state returned.")

    def route(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Router logits (b, t, M) → which memories each token writes (b, t, M) bool and their gates (b, t, M),
        in the logits' precision (float32 at least: half-precision logits are routed in float32)."""
        p = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)
        top, idx = p.topk(self.top_k, dim=-1)
        if self.gate == "renormalized":  # the chosen gates sum to one: at top_k = 1, g ≡ 1 (no router gradient)
            top = top / top.sum(-1, keepdim=True)
        chosen = torch.zeros_like(p, dtype=torch.bool).scatter(-1, idx, True)
        gates = torch.zeros_like(p).scatter(-1, idx, top)
        return chosen, gates.to(logits.dtype)

    def _streams(self, x: Tensor, conv_state: Tensor, resets: Tensor | None) -> tuple[Tensor, ...]:
        """Per token, before routing: q (b, t, h, k), k (b, t, n, h, k), v (b, t, n, h, v), β and log α
        (b, t, n, h), the router's logits (b, t, M), the output gate (b, t, h, v) and the conv state."""
        b, t, _ = x.shape
        n, M, h, e, ev = self.banks, self.num_memories, self.num_heads, self.head_dim, self.head_v
        K, V = self.key_width, self.value_width
        conv_in, gate, beta, pre, logits = self.in_proj(x).split((K + n * (K + V), V, n * h, n * h, M), dim=-1)
        conv_in, conv_state = causal_depthwise_conv(conv_in, self.conv_weight, None, conv_state, resets)
        q, k, v = F.silu(conv_in).split((K, n * K, n * V), dim=-1)
        q = F.normalize(q.view(b, t, h, e), dim=-1) / math.sqrt(e)
        k = F.normalize(k.view(b, t, n, h, e), dim=-1)
        log_decay = -self.A_log.exp() * F.softplus(pre + self.dt_bias)  # (b, t, n·h), ≤ 0
        return (q, k, v.view(b, t, n, h, ev), torch.sigmoid(beta).view(b, t, n, h), log_decay.view(b, t, n, h),
                logits, gate.view(b, t, h, -1), conv_state)

    def _routed(self, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor, chosen: Tensor,
                gates: Tensor, kv: Tensor, resets: Tensor | None) -> tuple[Tensor, Tensor]:
        """The M routed memories, each over its own tokens only (`pulse.ops.routing`): k, v, β, log α per
        memory (b, t, M, h, ·), kv (b, M, h, k, v) → Σ_m g_m o_m (b, h, t, v) and the states (b, M, h, k, v)."""
        b, t, h = q.shape[0], q.shape[1], self.num_heads
        positions, valid = routing.compact(chosen)  # (b, M, L)
        M, L = positions.shape[1:]
        heads = lambda z: z.reshape(b * M, L, h, -1).transpose(1, 2)  # noqa: E731  (b, M, L, h·f) → (b·M, h, L, f)
        on = valid.unsqueeze(-1).to(beta.dtype)  # padding: β = 0 and α = 1, nothing written or decayed
        q, k, v = (heads(routing.gather(z.flatten(-2), positions)) for z in (q, k, v))
        beta, log_decay = ((routing.gather(z, positions) * on).reshape(b * M, L, h).transpose(1, 2)
                           for z in (beta, log_decay))
        starts, keep = routing.run_starts(resets, positions, valid)
        o, kv = delta_rule(q, k, v, beta, log_decay, kv.reshape(b * M, *kv.shape[2:]),
                           None if starts is None else starts.reshape(b * M, L), chunk_size=self.chunk_size)
        if keep is not None:  # a document started after the memory's last token: it ends the window empty
            kv = kv * keep.reshape(b * M, 1, 1, 1).to(kv.dtype)
        weights = routing.gather(gates.unsqueeze(-1), positions) * on  # (b, M, L, 1), 0 on padding
        o = o.transpose(1, 2).reshape(b, M, L, -1) * weights
        return routing.scatter(o, positions, t).view(b, t, h, -1).transpose(1, 2), kv.view(b, M, *kv.shape[1:])

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        state, resets = self._open(x, state, doc_starts)
        q, k, v, beta, log_decay, logits, gate, conv_state = self._streams(x, state["conv"], resets)
        chosen, gates = self.route(logits)
        kv = state["kv"].view(x.shape[0], self.banks, self.num_heads, self.head_dim, self.head_v)
        s = int(self.shared)
        o, kv_routed = self._routed(q, k[:, :, s:], v[:, :, s:], beta[:, :, s:], log_decay[:, :, s:], chosen, gates,
                                    kv[:, s:], resets)
        finals = [kv_routed]
        if self.shared:  # every token writes the shared memory: one dense run
            tr = lambda z: z.transpose(1, 2)  # noqa: E731
            o_shared, kv_shared = delta_rule(tr(q), tr(k[:, :, 0]), tr(v[:, :, 0]), tr(beta[:, :, 0]),
                                             tr(log_decay[:, :, 0]), kv[:, 0], resets, chunk_size=self.chunk_size)
            o, finals = o + o_shared, [kv_shared.unsqueeze(1), kv_routed]
        kv = torch.cat(finals, dim=1).flatten(1, 2)  # (b, n·h, k, v), memory-major, the shared one first
        return self._output(o, gate), {"conv": conv_state, "kv": kv}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        state = self._open_step(x_t, state, doc_starts)
        q, k, v, beta, log_decay, logits, gate, conv_state = self._streams(x_t.unsqueeze(1), state["conv"], None)
        chosen, gates = self.route(logits)
        writes = chosen if not self.shared else torch.cat((torch.ones_like(chosen[..., :1]), chosen), dim=-1)
        writes = writes.unsqueeze(-1).to(x_t.dtype)  # (b, 1, n, 1): a memory not chosen is left as it is
        tr = lambda z: z.flatten(2, 3).transpose(1, 2)  # noqa: E731  (b, 1, n, h, ·) → (b, n·h, 1, ·)
        q_all = q.unsqueeze(2).expand(-1, -1, self.banks, -1, -1)  # every memory is read with the token's query
        o, kv = recurrent_delta_rule(tr(q_all), tr(k), tr(v), tr(beta * writes), tr(log_decay * writes),
                                     state["kv"])  # one token: the recurrence
        o = o.view(o.shape[0], self.banks, self.num_heads, 1, -1)
        routed = (o[:, int(self.shared):] * gates.permute(0, 2, 1)[:, :, None, :, None]).sum(1)
        o = routed + o[:, 0] if self.shared else routed
        return self._output(o, gate).squeeze(1), {"conv": conv_state, "kv": kv}

    def flops_per_token(self, seq_len: int) -> float:
        d, h, w, n, M = self.dim, self.num_heads, self.conv_size, self.banks, self.num_memories
        K, V = self.key_width, self.value_width
        c = max(1, min(self.chunk_size, seq_len))
        proj = 2.0 * d * (K + n * (K + V) + V + 2 * n * h + M) + 2.0 * V * d
        memories = (int(self.shared) + self.top_k) * (c * (5 * K + 3 * V) + 6.0 * h * self.head_dim * self.head_v)
        return proj + 2.0 * w * (K + n * (K + V)) + memories + 12.0 * (K + n * (K + V)) + 4.0 * M

    def state_numel(self, seq_len: int) -> int:
        conv = (self.conv_size - 1) * self.conv_weight.shape[0]
        return conv + self.banks * self.num_heads * self.head_dim * self.head_v

    def param_count(self) -> int:
        d, h, w, n, M = self.dim, self.num_heads, self.conv_size, self.banks, self.num_memories
        K, V = self.key_width, self.value_width
        return d * (K + n * (K + V) + V + 2 * n * h + M) + V * d + w * (K + n * (K + V)) + self.head_v + 2 * n * h
