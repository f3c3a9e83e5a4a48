"""The PULSE layer: a bank of slots that tokens read from and, chunk by chunk, write into.

# b batch · t time · n chunks · c chunk size · d model · k state dim · s slots · h heads · e head dim
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.allocator import AdaptiveStateAllocator
from pulse.blocks.propagator import GateType, StatePropagator, check_gate
from pulse.blocks.router import TokenToStateRouter
from pulse.blocks.state_manager import StateManager
from pulse.contract import check_input
from pulse.errors import PulseError
from pulse.ops.mingru_scan import mingru_coefficients, mingru_scan

Local = Literal["attention", "conv"]
LOCALS: tuple[str, ...] = ("attention", "conv")


class ChunkRecurrentMixer(nn.Module, ABC):
    """The token side every chunk-recurrent slot mixer shares.

    The sequence is cut into chunks of c tokens. Token t of chunk j reads, in one softmax per
    head, the slots as they stood after chunk j−1 and (local = "attention") the tokens of its own
    chunk up to t; with local = "conv" it reads the slots only and adds a causal depthwise
    convolution of the token values that runs across chunk boundaries. The state holds the
    slots, the keys/values of the current partial chunk and the convolution's last inputs, so
    forward, split forwards and `step` agree exactly. Subclasses say how the slots evolve:
    `_token_streams` (per-token tensors a completed chunk needs, at least "k" and "v"),
    `_init_slots` and `_advance` (the slots after each chunk completed here).
    """

    def __init__(
        self,
        dim: int,
        *,
        state_dim: int | None,
        num_heads: int,
        chunk_size: int,
        local: Local,
        conv_kernel: int,
        device=None,
        dtype=None,
    ):
        super().__init__()
        state_dim = state_dim or dim
        if chunk_size < 1:
            raise PulseError(f"chunk_size must be ≥ 1, got {chunk_size}.")
        if local not in LOCALS:
            raise PulseError(f"unknown local path `{local}`; choose one of {', '.join(LOCALS)}.")
        if state_dim % num_heads:
            raise PulseError(f"num_heads ({num_heads}) must divide state_dim ({state_dim}); pick a divisor of {state_dim}.")
        if conv_kernel < 1:
            raise PulseError(f"conv_kernel must be ≥ 1, got {conv_kernel}.")
        self.dim, self.state_dim, self.num_heads, self.head_dim = dim, state_dim, num_heads, state_dim // num_heads
        self.chunk_size, self.local = chunk_size, local
        self.conv_kernel = conv_kernel if local == "conv" else 0
        self.query = nn.Linear(dim, state_dim, bias=False, device=device, dtype=dtype)
        self.slot_kv = nn.Linear(state_dim, 2 * state_dim, bias=False, device=device, dtype=dtype)
        self.out = nn.Linear(state_dim, dim, bias=False, device=device, dtype=dtype)
        if local == "conv":
            self.conv = nn.Parameter(torch.empty(state_dim, conv_kernel, device=device, dtype=dtype))
            bound = 1.0 / math.sqrt(conv_kernel)
            nn.init.uniform_(self.conv, -bound, bound)

    @abstractmethod
    def _token_streams(self, x: Tensor) -> dict[str, Tensor]:
        """Per-token tensors (b, t, ·) that a completed chunk needs; "k" and "v" are also the local keys/values."""

    @abstractmethod
    def _init_slots(self, batch: int, device, dtype) -> dict[str, Any]:
        """The slot part of a fresh state."""

    @abstractmethod
    def _advance(self, slots: dict[str, Any], chunks: dict[str, Tensor], num_read: int) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Write the completed chunks (b, n, c, ·) into the slots. Returns what chunks 0..num_read−1 read,
        (b, num_read, s, k) — chunk j reads the slots after j of these chunks — an optional read
        bias (b, num_read, s), and the slot state after all n chunks."""

    def _check_slots(self, slots: dict[str, Any], batch: int) -> None:
        """Raise PulseError when a state does not fit the layer as it is now."""

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.query.weight.device
        dtype = dtype if dtype is not None else self.query.weight.dtype
        state: dict[str, Any] = {"slots": self._init_slots(batch, device, dtype), "buffer": {}}
        if self.conv_kernel > 1:
            state["conv"] = torch.zeros(batch, self.conv_kernel - 1, self.state_dim, device=device, dtype=dtype)
        return state

    def forward(self, x: Tensor, state: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x)
        b, t, _ = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        if not isinstance(state, dict) or "slots" not in state or "buffer" not in state:
            raise PulseError(f"{type(self).__name__} got a state it did not make; pass the state its forward or init_state returned.")
        self._check_slots(state["slots"], b)
        c = self.chunk_size
        streams = self._token_streams(x)  # each (b, t, ·)
        buffer = state["buffer"]
        offset = buffer["k"].shape[1] if buffer else 0
        full = {name: torch.cat((buffer[name], s), dim=1) if buffer else s for name, s in streams.items()}
        n = offset + t
        done = n // c
        chunks = {name: s[:, : done * c].unflatten(1, (done, c)) for name, s in full.items()}  # (b, n_done, c, ·)
        views, bias, slots = self._advance(state["slots"], chunks, -(-n // c))
        y = self._read(self.query(x), full["k"], full["v"], views, bias, offset)
        new: dict[str, Any] = {"slots": slots, "buffer": {}}
        if n > done * c:
            # cloned so the state does not pin the whole sequence's keys and values
            new["buffer"] = {name: s[:, done * c :].clone() for name, s in full.items()}
        if self.local == "conv":
            y_conv, history = self._conv(streams["v"], state.get("conv"))
            y = y + y_conv
            if history is not None:
                new["conv"] = history
        return self.out(y), new

    def step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        check_input(self, x_t, ndim=2)
        y, state = self.forward(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    def _read(self, q: Tensor, k: Tensor, v: Tensor, views: Tensor, bias: Tensor | None, offset: int) -> Tensor:
        """Token outputs (b, t, k) from queries q (b, t, k) of the new tokens, keys/values k, v
        (b, offset + t, k) from the start of the first open chunk, slots views (b, n, s, k)
        (chunk j reads views[:, j]) and an optional logit bias (b, n, s) on the slots."""
        b, t, _ = q.shape
        c, h, e = self.chunk_size, self.num_heads, self.head_dim
        n, s = views.shape[1], views.shape[2]
        if n == 1:
            # one open chunk (always so in `step`): only the new tokens ask, keys start at the chunk
            rows, cols, diagonal, pad = t, offset + t, offset, 0
        else:
            # whole chunks side by side: the first `offset` queries belong to tokens answered by an
            # earlier call and the last `pad` to no token; both are zeros, dropped below
            rows, cols, diagonal, pad = c, c, 0, n * c - offset - t
            if offset or pad:
                q = F.pad(q, (0, 0, offset, pad))
        q = q.reshape(b * n, rows, h, e).transpose(1, 2)  # (b n, h, rows, e)
        sk, sv = (z.reshape(b * n, s, h, e).transpose(1, 2) for z in self.slot_kv(views).chunk(2, dim=-1))
        if self.local == "attention":
            tk, tv = ((F.pad(z, (0, 0, 0, pad)) if pad else z).reshape(b * n, cols, h, e).transpose(1, 2) for z in (k, v))
            keys, values = torch.cat((sk, tk), dim=2), torch.cat((sv, tv), dim=2)  # (b n, h, s + cols, e)
            causal = torch.ones(rows, cols, dtype=torch.bool, device=q.device).tril(diagonal=diagonal)
            if bias is None:
                mask = torch.cat((torch.ones(rows, s, dtype=torch.bool, device=q.device), causal), dim=1)
            else:
                tokens = torch.zeros(rows, cols, dtype=q.dtype, device=q.device).masked_fill(~causal, float("-inf"))
                mask = torch.cat(
                    (bias.reshape(b * n, 1, 1, s).expand(-1, 1, rows, s), tokens.expand(b * n, 1, rows, cols)), dim=-1
                )
        else:
            keys, values = sk, sv
            mask = None if bias is None else bias.reshape(b * n, 1, 1, s)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (b n, h, rows, e)
        y = y.transpose(1, 2).reshape(b, n * rows, self.state_dim)
        return y if n == 1 else y[:, offset : offset + t]

    def _conv(self, v: Tensor, history: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Causal depthwise convolution of v (b, t, k) continuing from the previous K−1 values."""
        kernel = self.conv_kernel
        x = v if history is None else torch.cat((history, v), dim=1)  # (b, K−1+t, k)
        y = F.conv1d(x.transpose(1, 2), self.conv.unsqueeze(1), groups=self.state_dim).transpose(1, 2)
        return y, (x[:, x.shape[1] - (kernel - 1) :].clone() if kernel > 1 else None)

    def _token_flops(self, seq_len: int, num_slots: int) -> float:
        """Forward FLOPs per token of the token side: projections, the read, the local path."""
        d, k, c = self.dim, self.state_dim, self.chunk_size
        keys = num_slots + ((min(c, seq_len) + 1) / 2 if self.local == "attention" else 0)
        return 8.0 * d * k + 4.0 * k * keys + 2.0 * k * self.conv_kernel

    def _token_state(self, seq_len: int, per_token: int) -> int:
        """State numbers of the partial chunk buffer and the convolution history."""
        return (seq_len % self.chunk_size) * per_token + max(self.conv_kernel - 1, 0) * self.state_dim

    def _token_params(self) -> int:
        return 2 * self.dim * self.state_dim + 2 * self.state_dim**2 + self.state_dim * self.conv_kernel


class PulseLayer(ChunkRecurrentMixer):
    """Chunk-recurrent slot mixer: tokens read the slots, each completed chunk is written into them.

    Chunk j: y_t = W_o · MHA(q_t, [slots S_{j−1}; tokens ≤ t of chunk j]) (or slots + causal conv),
    then u = Router(S_{j−1}, chunk j), S_j = Comm(Gate(S_{j−1}, u)) (gru/lstm). With gate "mingru",
    S_j = (1−z)S_{j−1} + z ĥ with router queries from the learned initial slots, so all chunks are
    solved by one parallel scan, and tokens read Comm(S_{j−1}). c = 1 is the per-token recurrence.
    Cost per token: 8·d·k + 4·k·(s + c/2) + [(4 + 4 + 2·(k_x + k_h))·s·k² + 4·s·c·k + comm]/c,
    comm = 8·s·k² + 4·s²·k; O(n·s) in sequence length n, state s·k (2·s·k lstm) + partial chunk.
    Params: 2·d·k + 2·k² (+ k·K conv) + s·k + router (2·k² + 2·d·k) + propagator; k = state_dim.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_states: int = 16,
        state_dim: int | None = None,
        chunk_size: int = 64,
        gate: GateType = "gru",
        num_heads: int = 4,
        communication: bool = True,
        local: Local = "attention",
        conv_kernel: int = 4,
        manager: StateManager | None = None,
        allocator: AdaptiveStateAllocator | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, state_dim=state_dim, num_heads=num_heads, chunk_size=chunk_size, local=local,
                         conv_kernel=conv_kernel, device=device, dtype=dtype)
        k = self.state_dim
        check_gate(gate)
        if manager is not None and allocator is not None:
            raise PulseError("a PulseLayer takes a StateManager or an AdaptiveStateAllocator, not both.")
        if manager is not None and (manager.max_states != num_states or manager.state_dim != k):
            raise PulseError(
                f"the StateManager holds {manager.max_states} slots of width {manager.state_dim}; "
                f"build the layer with num_states={manager.max_states} and state_dim={manager.state_dim}."
            )
        if allocator is not None and (allocator.max_states != num_states or allocator.dim != dim):
            raise PulseError(
                f"the allocator budgets up to {allocator.max_states} slots of a width-{allocator.dim} model; "
                f"build the layer with num_states={allocator.max_states} and dim={allocator.dim}."
            )
        self.gate, self.communication, self.max_states = gate, communication, num_states
        self.manager, self.allocator = manager, allocator
        if manager is None:
            self.slot_init = nn.Parameter(torch.randn(num_states, k, device=device, dtype=dtype))
        self.router = TokenToStateRouter(k, token_dim=dim, num_heads=num_heads, device=device, dtype=dtype)
        self.propagator = StatePropagator(
            k, gate_type=gate, num_heads=num_heads, enable_communication=communication, device=device, dtype=dtype
        )

    @property
    def num_states(self) -> int:
        """Slots in use: the active slots of a StateManager, else all of them."""
        return self.manager.num_active if self.manager is not None else self.max_states

    def bank(self) -> tuple[Tensor, Tensor | None]:
        """Initial slots (s, k) and the per-slot read bias (s,) or None."""
        if self.manager is not None:
            return self.manager()
        return self.slot_init, None

    def _token_streams(self, x: Tensor) -> dict[str, Tensor]:
        k, v = self.router.project_tokens(x)
        streams = {"k": k, "v": v}
        if self.allocator is not None:
            streams["p"] = self.allocator.token_features(x)
        return streams

    def _init_slots(self, batch: int, device, dtype) -> dict[str, Any]:
        init, _ = self.bank()
        h = init.to(device=device, dtype=dtype).unsqueeze(0).expand(batch, -1, -1)
        slots: dict[str, Any] = {"h": h}
        if self.gate == "lstm":
            slots["c"] = self.propagator.init_cell(h)
        if self.allocator is not None:
            slots["alloc"] = self.allocator.init_state(batch, device=device, dtype=dtype)
        return slots

    def _check_slots(self, slots: dict[str, Any], batch: int) -> None:
        h = slots.get("h") if isinstance(slots, dict) else None
        if h is None or h.ndim != 3 or h.shape[0] != batch or h.shape[2] != self.state_dim:
            raise PulseError(f"PulseLayer got a state that does not fit a batch of {batch}; pass the state it returned.")
        if h.shape[1] != self.num_states:
            raise PulseError(
                f"the state holds {h.shape[1]} slots but the layer now uses {self.num_states} "
                f"(after prune/allocate); start a new sequence with state=None."
            )

    def _advance(self, slots: dict[str, Any], chunks: dict[str, Tensor], num_read: int) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        init, bias = self.bank()
        h = slots["h"]
        b, s = h.shape[0], h.shape[1]
        new: dict[str, Any] = {}
        masks = None
        if bias is not None:
            bias = bias.expand(b, num_read, s)
        if self.allocator is not None:
            budget, new["alloc"] = self.allocator.budgets(self.allocator.chunk_stats(chunks["p"]), slots["alloc"], num_read)
            masks, bias = self.allocator.masks(budget)  # (b, n_read, s) each
        kh, vh = self.router.heads(chunks["k"]), self.router.heads(chunks["v"])  # (b, n, h, c, e)
        if self.gate == "mingru":
            views, new["h"] = self._scan(h, init, kh, vh, masks, num_read)
            return views, bias, new
        views, new["h"], cell = self._loop(h, slots.get("c"), kh, vh, masks, num_read)
        if cell is not None:
            new["c"] = cell
        return views, bias, new

    def _loop(self, h: Tensor, cell: Tensor | None, kh: Tensor, vh: Tensor, masks: Tensor | None,
              num_read: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """gru/lstm: the chunks one after another, with as few (and as large) matmuls per chunk as the math allows."""
        router, prop = self.router, self.propagator
        n = kh.shape[1]
        if n == 0:
            return h.unsqueeze(1), h, cell
        # Router queries and the gate's state projection both read h: one matmul. The router's
        # output projection is linear and feeds only the gate's input projection: fold the two
        # when the fold (k_x·k·k² MACs) costs less than the matmuls it saves (n·b·s·k² MACs).
        # Weights are laid out (in, out) once here: small-row matmuls run faster that way round.
        w_state = torch.cat((router.q.weight, prop.w_h.weight)).t().contiguous()  # (k, k + k_h·k)
        fold = n * h.shape[0] * h.shape[1] >= prop.w_x.out_features
        w_in = (prop.w_x.weight @ router.out.weight).t().contiguous() if fold else None  # (k, k_x·k)
        # unbind once: indexing chunk j inside the loop would make backward write a full-size
        # zero gradient per chunk, O(n²) in the number of chunks
        ks, vs = kh.unbind(1), vh.unbind(1)
        ms = masks.unbind(1) if masks is not None else None
        views = [h]
        for j in range(len(ks)):
            q, hs = (h @ w_state).split((self.state_dim, prop.w_h.out_features), dim=-1)
            mixed = F.scaled_dot_product_attention(router.heads(q), ks[j], vs[j])  # (b, h, s, e)
            mixed = mixed.transpose(-3, -2).flatten(-2)  # (b, s, k)
            xs = torch.addmm(prop.w_x.bias, mixed.flatten(0, -2), w_in).view(*mixed.shape[:-1], -1) if fold \
                else prop.w_x(router.out(mixed))  # (b, s, k_x·k)
            if self.gate == "lstm":
                h_new, c_new = prop.combine((h, cell), xs, hs)
            else:
                h_new, c_new = prop.combine(h, xs, hs), None
            h_new = prop.communicate(h_new)
            if ms is not None:
                m = ms[j].unsqueeze(-1)
                h_new = h + m * (h_new - h)
                c_new = cell + m * (c_new - cell) if c_new is not None else None
            h, cell = h_new, c_new
            if j + 1 < num_read:
                views.append(h)
        return torch.stack(views, dim=1), h, cell

    def _scan(self, h: Tensor, init: Tensor, kh: Tensor, vh: Tensor, masks: Tensor | None, num_read: int) -> tuple[Tensor, Tensor]:
        """mingru: every completed chunk's update at once, then one parallel scan over chunks."""
        b, n = kh.shape[:2]
        raw = h.unsqueeze(1)
        if n:
            q = self.router.queries(init.to(h.dtype)).unsqueeze(0).expand(b * n, -1, -1, -1)  # (b n, h, s, e)
            u = self.router.route(q, kh.flatten(0, 1), vh.flatten(0, 1)).unflatten(0, (b, n))  # (b, n, s, k)
            g, cand = self.propagator.mingru_parts(u)
            decay, coef = mingru_coefficients(g, cand, None if masks is None else masks[:, :n].unsqueeze(-1))
            states = mingru_scan(decay, coef, h)  # (b, n, s, k): after chunks 1..n
            raw = torch.cat((raw, states[:, : num_read - 1]), dim=1)
            h = states[:, -1]
        return self.propagator.communicate(raw), h

    def flops_per_token(self, seq_len: int) -> float:
        n = max(seq_len, 1)
        s, k, c = self.num_states, self.state_dim, self.chunk_size
        done, reads = n // c, -(-n // c)
        mingru = self.gate == "mingru"
        comm = self.propagator.communication.flops(s) if self.propagator.communication is not None else 0.0
        per_read = 4.0 * s * k * k + (comm if mingru else 0.0)
        per_write = 4.0 * s * k * k + 4.0 * s * c * k + self.propagator.flops(s, communication=not mingru)
        total = self._token_flops(n, s) + (reads * per_read + done * per_write) / n
        if self.allocator is not None:
            total += self.allocator.flops(c)
        return total

    def state_numel(self, seq_len: int) -> int:
        s, k = self.num_states, self.state_dim
        per_token = 2 * k + (self.allocator.features if self.allocator is not None else 0)
        alloc = 2 * self.allocator.features + 1 if self.allocator is not None else 0
        return s * k * (2 if self.gate == "lstm" else 1) + self._token_state(seq_len, per_token) + alloc

    def param_count(self) -> int:
        k = self.state_dim
        bank = self.manager.param_count() if self.manager is not None else self.max_states * k
        alloc = self.allocator.param_count() if self.allocator is not None else 0
        return self._token_params() + bank + self.router.param_count() + self.propagator.param_count() + alloc


def reference_forward(layer: PulseLayer, x: Tensor) -> Tensor:
    """PulseLayer.forward(x)[0] from a fresh state, one token at a time, written plainly (the test oracle)."""
    b, t, _ = x.shape
    c, h, e, s = layer.chunk_size, layer.num_heads, layer.head_dim, layer.num_states
    init, read_bias = layer.bank()
    slots = init.unsqueeze(0).expand(b, -1, -1)
    cell = torch.zeros_like(slots)
    alloc = layer.allocator
    stat_sum = torch.zeros(b, 2 * alloc.features, dtype=x.dtype) if alloc is not None else None
    count = 0
    history = [torch.zeros(b, layer.state_dim, dtype=x.dtype)] * max(layer.conv_kernel - 1, 0)
    chunk: list[Tensor] = []
    outputs = []
    for i in range(t):
        if not chunk:
            view = layer.propagator.communicate(slots) if layer.gate == "mingru" else slots
            slot_bias = torch.zeros(b, s, dtype=x.dtype)
            mask = None
            if read_bias is not None:
                slot_bias = slot_bias + read_bias
            if alloc is not None:
                budget = alloc.budget(stat_sum / max(count, 1))
                mask, log_mask = alloc.masks(budget)
                slot_bias = slot_bias + log_mask
        chunk.append(x[:, i])
        q = layer.query(x[:, i]).view(b, h, e)
        keys, values = layer.slot_kv(view).chunk(2, dim=-1)  # (b, s, k)
        bias = slot_bias
        if layer.local == "attention":
            tk, tv = layer.router.project_tokens(torch.stack(chunk, dim=1))
            keys, values = torch.cat((keys, tk), dim=1), torch.cat((values, tv), dim=1)
            bias = torch.cat((slot_bias, torch.zeros(b, len(chunk), dtype=x.dtype)), dim=1)
        keys, values = keys.view(b, -1, h, e), values.view(b, -1, h, e)
        weights = torch.softmax(torch.einsum("bhe,bnhe->bhn", q, keys) / math.sqrt(e) + bias.unsqueeze(1), dim=-1)
        mixed = torch.einsum("bhn,bnhe->bhe", weights, values).reshape(b, -1)
        if layer.local == "conv":
            history.append(layer.router.project_tokens(x[:, i])[1])
            taps = history[len(history) - layer.conv_kernel :]
            mixed = mixed + sum(layer.conv[:, j] * taps[j] for j in range(layer.conv_kernel))
        outputs.append(layer.out(mixed))
        if len(chunk) == c:
            tokens = torch.stack(chunk, dim=1)
            queries = init.unsqueeze(0).expand(b, -1, -1) if layer.gate == "mingru" else slots
            u = layer.router(queries, tokens)
            if layer.gate == "lstm":
                new, new_cell = layer.propagator.gate((slots, cell), u)
            else:
                new, new_cell = layer.propagator.gate(slots, u), cell
            if layer.gate != "mingru":
                new = layer.propagator.communicate(new)
            if mask is not None:
                new = slots + mask.unsqueeze(-1) * (new - slots)
                new_cell = cell + mask.unsqueeze(-1) * (new_cell - cell)
            slots, cell = new, new_cell
            if alloc is not None:
                stat_sum = stat_sum + alloc.chunk_stats(alloc.token_features(tokens).unsqueeze(1)).squeeze(1)
                count += 1
            chunk = []
    return torch.stack(outputs, dim=1)
