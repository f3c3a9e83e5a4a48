"""Three levels of slots on three clocks: every chunk, every r chunks, every r² chunks.

# b batch · t time · n chunks · c chunk size · d model · k state dim · s slots · h heads · e head dim
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pulse.blocks.pulse.chunked import ChunkRecurrentMixer, Local
from pulse.blocks.pulse.propagator import GateType, StatePropagator, check_gate
from pulse.blocks.pulse.routed_update import FusedWeights, fuse, routed_update
from pulse.blocks.pulse.router import TokenToStateRouter
from pulse.contract import no_weight_decay
from pulse.errors import PulseError
from pulse.ops import backend

LEVELS = ("token", "chunk", "global")


class HierarchicalStateManager(ChunkRecurrentMixer):
    """Token-, chunk- and global-level slots; tokens read all three levels.

    After completed chunk g (counting from 0): T ← P₀(T, R₀(T, chunk g)); if g mod r = 0,
    C ← P₁(C, R₁(C, T)); if g mod r² = 0, G ← P₂(G, R₂(G, C)) — each upper level is written
    from the level below, so the upper levels take their first write at the first chunk
    and then tick every r and r² chunks. Chunk j's tokens read [T; C; G] as they stood after
    chunk j−1, plus the local causal path (see ChunkRecurrentMixer). The chunk loop is
    sequential for every gate (P_ℓ = gate then communication).
    Cost per token: 8·d·k + 4·k·(s + c/2) + [4·s·k² + u₀ + u₁/r + u₂/r²]/c with s = s₀+s₁+s₂ and
    u_ℓ the cost of one level update (router + gate + communication); state s·k (2·s·k lstm).
    Params: 2·d·k + 2·k² (+ k·K conv) + s·k + routers (2·k² + 2·d·k, then 4·k² twice) + 3 propagators.
    """

    def __init__(
        self,
        dim: int,
        *,
        token_slots: int = 8,
        chunk_slots: int = 4,
        global_slots: int = 4,
        slot_dim: int | None = None,
        chunk_size: int = 64,
        ratio: int = 2,
        gate: GateType = "gru",
        num_heads: int = 4,
        communication: bool = True,
        local: Local = "attention",
        conv_size: int = 4,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, slot_dim=slot_dim, num_heads=num_heads, chunk_size=chunk_size, local=local,
                         conv_size=conv_size, device=device, dtype=dtype)
        k = self.slot_dim
        check_gate(gate)
        if ratio < 2:
            raise PulseError(f"ratio must be ≥ 2 (the chunk level ticks every `ratio` chunks), got {ratio}.")
        sizes = (token_slots, chunk_slots, global_slots)
        if min(sizes) < 1:
            raise PulseError(f"every level needs at least one slot, got token/chunk/global = {sizes}.")
        self.gate, self.ratio, self.level_sizes = gate, ratio, sizes
        self.slot_init = nn.ParameterList(
            [no_weight_decay(nn.Parameter(torch.randn(s, k, device=device, dtype=dtype))) for s in sizes]
        )
        self.routers = nn.ModuleList(
            [TokenToStateRouter(k, token_dim=dim if level == 0 else k, num_heads=num_heads, device=device, dtype=dtype)
             for level in range(3)]
        )
        self.propagators = nn.ModuleList(
            [StatePropagator(k, gate=gate, num_heads=num_heads, communication=communication,
                             device=device, dtype=dtype) for _ in range(3)]
        )

    @property
    def num_slots(self) -> int:
        return sum(self.level_sizes)

    def _token_streams(self, x: Tensor) -> dict[str, Tensor]:
        k, v = self.routers[0].project_tokens(x)
        return {"k": k, "v": v}

    def _init_slots(self, batch: int, device, dtype) -> dict[str, Any]:
        levels = [p.to(device=device, dtype=dtype).unsqueeze(0).expand(batch, -1, -1) for p in self.slot_init]
        slots: dict[str, Any] = {"levels": levels, "chunks": 0}
        if self.gate == "lstm":
            slots["cells"] = [torch.zeros_like(h) for h in levels]
        return slots

    def _check_slots(self, slots: dict[str, Any], batch: int) -> None:
        levels = slots.get("levels") if isinstance(slots, dict) else None
        if (
            not isinstance(levels, list)
            or len(levels) != 3
            or any(h.shape != (batch, s, self.slot_dim) for h, s in zip(levels, self.level_sizes))
        ):
            raise PulseError(
                f"HierarchicalStateManager got a state that does not fit a batch of {batch}; "
                "pass the state it returned."
            )

    def _update(self, level: int, h: Tensor, cell: Tensor | None, inputs: Tensor | tuple[Tensor, Tensor],
                weights: FusedWeights) -> tuple[Tensor, Tensor | None]:
        """Route `inputs` into level `level`'s slots h (and lstm cell), gate and communicate: the chunk's
        token keys/values (b, c, k) each for level 0, the slots of the level below (b, s, k) above it."""
        router = self.routers[level]
        k, v = router.project_tokens(inputs) if level else inputs
        return routed_update(router, self.propagators[level], weights, h, cell, router.heads(k), router.heads(v))

    def _advance(
        self, slots: dict[str, Any], chunks: dict[str, Tensor], num_read: int
    ) -> tuple[Tensor, None, dict[str, Any]]:
        lstm = self.gate == "lstm"
        levels = list(slots["levels"])
        cells = list(slots["cells"]) if lstm else [None] * 3
        g = slots["chunks"]
        k, v = chunks["k"], chunks["v"]  # (b, n, c, k)
        n = k.shape[1]
        # level ℓ is written after chunk g when r^ℓ divides g; a level with no write here needs no weights
        writes = [sum((g + j) % self.ratio**level == 0 for j in range(n)) for level in range(3)]
        weights = [fuse(self.routers[level], self.propagators[level], w, h.shape[0] * h.shape[1]) if w else None
                   for level, (w, h) in enumerate(zip(writes, levels))]
        # what each chunk reads, per level; one stack per level and one cat at the end, not a cat per chunk
        seen = [[h] for h in levels]
        ks, vs = k.unbind(1), v.unbind(1)  # once, not k[:, j] per chunk (O(n²) backward)
        update = backend.step_function(self, "level_update", self._update, k.device)
        for j in range(n):
            for level in range(3):
                if g % self.ratio**level:
                    break
                inputs = (ks[j], vs[j]) if level == 0 else levels[level - 1]
                levels[level], cells[level] = update(level, levels[level], cells[level], inputs, weights[level])
            g += 1
            if j + 1 < num_read:
                for level in range(3):
                    seen[level].append(levels[level])
        new: dict[str, Any] = {"levels": levels, "chunks": g}
        if lstm:
            new["cells"] = cells
        return torch.cat([torch.stack(hs, dim=1) for hs in seen], dim=2), None, new

    def flops_per_token(self, seq_len: int) -> float:
        n = max(seq_len, 1)
        s, k, c, r = self.num_slots, self.slot_dim, self.chunk_size, self.ratio
        sizes = self.level_sizes
        updates = []
        for level in range(3):
            width = c if level == 0 else sizes[level - 1]
            kv = 0.0 if level == 0 else 4.0 * width * k * k
            updates.append(kv + 4.0 * sizes[level] * k * k + 4.0 * sizes[level] * width * k
                           + self.propagators[level].flops(sizes[level]))
        done, reads = n // c, -(-n // c)
        writes = [done, -(-done // r), -(-done // r**2)]
        slot_side = reads * 4.0 * s * k * k + sum(w * u for w, u in zip(writes, updates))
        return self._token_flops(n, s) + slot_side / n

    def state_numel(self, seq_len: int) -> int:
        return (
            self.num_slots * self.slot_dim * (2 if self.gate == "lstm" else 1)
            + self._token_state(seq_len, 2 * self.slot_dim)
        )

    def param_count(self) -> int:
        return (
            self._token_params()
            + self.num_slots * self.slot_dim
            + sum(r.param_count() for r in self.routers)
            + sum(p.param_count() for p in self.propagators)
        )
