"""The PULSE layer: a bank of slots that tokens read from and, chunk by chunk, write into.

# b batch · t time · n chunks · c chunk size · d model · k state dim · s slots · h heads · e head dim
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan

from pulse.blocks.pulse.allocator import AdaptiveStateAllocator
from pulse.blocks.pulse.chunked import ChunkRecurrentMixer, Local
from pulse.blocks.pulse.propagator import GateType, StatePropagator, check_gate
from pulse.blocks.pulse.routed_update import FusedWeights, fuse, routed_update
from pulse.blocks.pulse.router import TokenToStateRouter
from pulse.blocks.pulse.state_manager import StateManager
from pulse.contract import no_weight_decay
from pulse.errors import PulseError
from pulse.ops import backend
from pulse.ops.mingru_scan import mingru_coefficients, mingru_scan


class PulseLayer(ChunkRecurrentMixer):
    """Chunk-recurrent slot mixer: tokens read the slots, each completed chunk is written into them.

    Chunk j: y_t = W_o · MHA(q_t, [slots S_{j−1}; tokens ≤ t of chunk j]) (or slots + causal conv),
    then u = Router(S_{j−1}, chunk j), S_j = Comm(Gate(S_{j−1}, u)) (gru/lstm). With gate "mingru",
    S_j = (1−z)S_{j−1} + z ĥ with router queries from the learned initial slots, so all chunks are
    solved by one parallel scan, and tokens read Comm(S_{j−1}). c = 1 is the per-token recurrence.
    Cost per token: 8·d·k + 4·k·(s + c/2) + [(4 + 4 + 2·(k_x + k_h))·s·k² + 4·s·c·k + comm]/c,
    comm = 8·s·k² + 4·s²·k; O(n·s) in sequence length n, state s·k (2·s·k lstm) + partial chunk.
    Params: 2·d·k + 2·k² (+ k·K conv) + s·k + router (2·k² + 2·d·k) + propagator; k = slot_dim.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_slots: int = 16,
        slot_dim: int | None = None,
        chunk_size: int = 64,
        gate: GateType = "gru",
        num_heads: int = 4,
        communication: bool = True,
        local: Local = "attention",
        conv_size: int = 4,
        manager: StateManager | None = None,
        allocator: AdaptiveStateAllocator | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, slot_dim=slot_dim, num_heads=num_heads, chunk_size=chunk_size, local=local,
                         conv_size=conv_size, device=device, dtype=dtype)
        k = self.slot_dim
        check_gate(gate)
        if manager is not None and allocator is not None:
            raise PulseError("a PulseLayer takes a StateManager or an AdaptiveStateAllocator, not both.")
        if manager is not None and (manager.max_slots != num_slots or manager.slot_dim != k):
            raise PulseError(
                f"the StateManager holds {manager.max_slots} slots of width {manager.slot_dim}; "
                f"build the layer with num_slots={manager.max_slots} and slot_dim={manager.slot_dim}."
            )
        if allocator is not None and (allocator.max_slots != num_slots or allocator.dim != dim):
            raise PulseError(
                f"the allocator budgets up to {allocator.max_slots} slots of a width-{allocator.dim} model; "
                f"build the layer with num_slots={allocator.max_slots} and dim={allocator.dim}."
            )
        self.gate, self.communication, self.max_slots = gate, communication, num_slots
        self.manager, self.allocator = manager, allocator
        if manager is None:
            self.slot_init = no_weight_decay(nn.Parameter(torch.randn(num_slots, k, device=device, dtype=dtype)))
        self.router = TokenToStateRouter(k, token_dim=dim, num_heads=num_heads, device=device, dtype=dtype)
        self.propagator = StatePropagator(
            k, gate=gate, num_heads=num_heads, communication=communication, device=device, dtype=dtype
        )

    @property
    def num_slots(self) -> int:
        """Slots in use: the active slots of a StateManager, else all of them."""
        return self.manager.num_active if self.manager is not None else self.max_slots

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
        if h is None or h.ndim != 3 or h.shape[0] != batch or h.shape[2] != self.slot_dim:
            raise PulseError(
                f"PulseLayer got a state that does not fit a batch of {batch}; pass the state it returned."
            )
        if h.shape[1] != self.num_slots:
            raise PulseError(
                f"the state holds {h.shape[1]} slots but the layer now uses {self.num_slots} "
                f"(after prune/allocate); start a new sequence with state=None."
            )

    def _advance(
        self, slots: dict[str, Any], chunks: dict[str, Tensor], num_read: int
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        init, bias = self.bank()
        h = slots["h"]
        b, s = h.shape[0], h.shape[1]
        new: dict[str, Any] = {}
        masks = None
        if bias is not None:
            bias = bias.expand(b, num_read, s)
        if self.allocator is not None:
            budget, new["alloc"] = self.allocator.budgets(
                self.allocator.chunk_stats(chunks["p"]), slots["alloc"], num_read
            )
            masks, bias = self.allocator.masks(budget)  # (b, n_read, s) each
            if self.capture_sink is not None:
                self.capture_sink("budget", budget.detach())
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
        if torch.compiler.is_exporting():
            return self._loop_export(h, cell, kh, vh, masks)
        n = kh.shape[1]
        if n == 0:
            return h.unsqueeze(1), h, cell
        weights = fuse(self.router, self.propagator, n, h.shape[0] * h.shape[1])
        # unbind once: indexing chunk j inside the loop would make backward write a full-size
        # zero gradient per chunk, O(n²) in the number of chunks
        ks, vs = kh.unbind(1), vh.unbind(1)
        ms = masks.unbind(1) if masks is not None else [None] * len(ks)
        # on CUDA the chunk step runs compiled (PULSE_COMPILE, pulse.ops.backend): a handful of fused
        # kernels per chunk instead of a launch per op; the loop around it stays eager
        step = self._chunk_step if self.capture_sink is not None else \
            backend.step_function(self, "chunk_step", self._chunk_step, h.device)
        views = [h]
        for j in range(len(ks)):
            if self.capture_sink is not None:
                q = h @ weights.state[:, : self.slot_dim]
                self.capture_sink("route", self.router.weights(self.router.heads(q), ks[j]).detach())
            h, cell = step(h, cell, ks[j], vs[j], ms[j], weights)
            if j + 1 < num_read:
                views.append(h)
        return torch.stack(views, dim=1), h, cell

    def _chunk_step(self, h: Tensor, cell: Tensor | None, k: Tensor, v: Tensor, m: Tensor | None,
                    weights: FusedWeights) -> tuple[Tensor, Tensor | None]:
        """One chunk of the gru/lstm loop: route keys/values k, v (b, h, c, e) into slots h (b, s, k), gate,
        communicate (`routed_update`), and keep slots whose mask m (b, s) is 0 unchanged."""
        h_new, c_new = routed_update(self.router, self.propagator, weights, h, cell, k, v)
        if m is not None:
            m = m.unsqueeze(-1)
            h_new = h + m * (h_new - h)
            c_new = cell + m * (c_new - cell) if c_new is not None else None
        return h_new, c_new

    def _loop_export(self, h: Tensor, cell: Tensor | None, kh: Tensor, vh: Tensor,
                     masks: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """gru/lstm for torch.export: the same chunk recurrence as one scan (an ONNX Scan), so the
        number of chunks stays a dynamic axis. Reads all n chunks (num_read = n)."""
        router, prop = self.router, self.propagator
        lstm = self.gate == "lstm"

        def chunk(carry: tuple[Tensor, ...], xs: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
            h, cell = carry if lstm else (carry[0], None)
            q, hs = router.q(h), prop.w_h(h)
            mixed = F.scaled_dot_product_attention(router.heads(q), xs[0], xs[1]).transpose(-3, -2).flatten(-2)
            xs_in = prop.w_x(router.out(mixed))
            h_new, c_new = prop.combine((h, cell), xs_in, hs) if lstm else (prop.combine(h, xs_in, hs), None)
            h_new = prop.communicate(h_new)
            if masks is not None:
                m = xs[2].unsqueeze(-1)
                h_new = h + m * (h_new - h)
                c_new = cell + m * (c_new - cell) if lstm else None
            return ((h_new, c_new) if lstm else (h_new,)), h.clone()

        xs = (kh.movedim(1, 0), vh.movedim(1, 0)) + ((masks.movedim(1, 0),) if masks is not None else ())
        carry, views = scan(chunk, (h, cell) if lstm else (h,), xs)
        return views.movedim(0, 1), carry[0], carry[1] if lstm else None

    def _scan(
        self, h: Tensor, init: Tensor, kh: Tensor, vh: Tensor, masks: Tensor | None, num_read: int
    ) -> tuple[Tensor, Tensor]:
        """mingru: every completed chunk's update at once, then one parallel scan over chunks."""
        b, n = kh.shape[:2]
        raw = h.unsqueeze(1)
        if n:
            q = self.router.queries(init.to(h.dtype)).unsqueeze(0).expand(b * n, -1, -1, -1)  # (b n, h, s, e)
            u = self.router.route(q, kh.flatten(0, 1), vh.flatten(0, 1)).unflatten(0, (b, n))  # (b, n, s, k)
            g, cand = self.propagator.mingru_parts(u)
            decay, coef = mingru_coefficients(g, cand, None if masks is None else masks[:, :n].unsqueeze(-1))
            if self.capture_sink is not None:
                q_heads = q.unflatten(0, (b, n))
                self.capture_sink("route", self.router.weights(q_heads, kh).detach())
            if torch.compiler.is_exporting():
                # the O(√n) block scan branches on n; one ONNX Scan over chunks keeps n dynamic
                _, states = scan(_linear_step, h, (decay.movedim(1, 0), coef.movedim(1, 0)))
                states = states.movedim(0, 1)
            else:
                states = mingru_scan(decay, coef, h)  # (b, n, s, k): after chunks 1..n
            raw = torch.cat((raw, states[:, : num_read - 1]), dim=1)
            h = states[:, -1]
        # slots talk per chunk: (b n, s, k), the 4-D attention every backend (and ONNX) supports
        return self.propagator.communicate(raw.flatten(0, 1)).unflatten(0, (b, -1)), h

    def flops_per_token(self, seq_len: int) -> float:
        n = max(seq_len, 1)
        s, k, c = self.num_slots, self.slot_dim, self.chunk_size
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
        s, k = self.num_slots, self.slot_dim
        per_token = 2 * k + (self.allocator.features if self.allocator is not None else 0)
        alloc = 2 * self.allocator.features + 1 if self.allocator is not None else 0
        return s * k * (2 if self.gate == "lstm" else 1) + self._token_state(seq_len, per_token) + alloc

    def param_count(self) -> int:
        k = self.slot_dim
        bank = self.manager.param_count() if self.manager is not None else self.max_slots * k
        alloc = self.allocator.param_count() if self.allocator is not None else 0
        return self._token_params() + bank + self.router.param_count() + self.propagator.param_count() + alloc


def _linear_step(h: Tensor, ab: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """One step h ← a ⊙ h + b of the mingru recurrence, as a scan body (carry, output)."""
    h = ab[0] * h + ab[1]
    return h, h.clone()
