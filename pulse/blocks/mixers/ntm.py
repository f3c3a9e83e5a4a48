"""Neural Turing Machine memory (Graves et al., 2014) as a sequence mixer.

The memory is per sequence: every call without a state starts from the (learned or
fixed) initial memory, copied for each row of the batch; nothing persists between calls.
The addressing functions are exported for use in other models.

# b batch · t time · d model · N memory rows · M row width · r read heads · w write heads · H controller
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import check_input, no_weight_decay

MemoryInit = Literal["learned", "fixed"]

# rows of the fixed initial memory: small, equal and non-zero, so cosine similarity is defined
_FIXED_MEMORY_VALUE = 1e-6
_EPS = 1e-8


def content_weights(memory: Tensor, key: Tensor, beta: Tensor) -> Tensor:
    """softmax_i(β · cos(k, M_i)). memory: (b, N, M); key: (b, heads, M); beta: (b, heads) > 0 → (b, heads, N)."""
    dots = key @ memory.transpose(1, 2)  # (b, heads, N)
    norms = ((key.square().sum(-1, keepdim=True) + _EPS) * (memory.square().sum(-1).unsqueeze(1) + _EPS)).sqrt()
    return torch.softmax(beta.unsqueeze(-1) * dots / norms, dim=-1)


def address(
    memory: Tensor, key: Tensor, beta: Tensor, gate: Tensor, shift: Tensor, gamma: Tensor, previous: Tensor
) -> Tensor:
    """The NTM weighting: content → interpolate with `previous` (gate g) → circular shift → sharpen (γ ≥ 1).

    gate: (b, heads) in (0, 1); shift: (b, heads, 3), a distribution over shifts −1, 0, +1;
    previous: (b, heads, N). Returns (b, heads, N), rows summing to 1.
    """
    g = gate.unsqueeze(-1)
    w = g * content_weights(memory, key, beta) + (1 - g) * previous
    w = shift[..., 0:1] * w.roll(-1, dims=-1) + shift[..., 1:2] * w + shift[..., 2:3] * w.roll(1, dims=-1)
    # w^γ / Σ w^γ in log space; the clamp keeps log finite where a weight underflowed to 0
    return torch.softmax(gamma.unsqueeze(-1) * w.clamp_min(1e-30).log(), dim=-1)


def write(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """M ⊙ Π_heads (1 − w eᵀ) + Σ_heads w aᵀ. weights: (b, heads, N); erase (in (0, 1)), add: (b, heads, M)."""
    keep = (1 - weights.unsqueeze(-1) * erase.unsqueeze(-2)).prod(dim=1)  # (b, N, M)
    return memory * keep + weights.transpose(1, 2) @ add


def read(memory: Tensor, weights: Tensor) -> Tensor:
    """wᵀ M per head: (b, heads, N) × (b, N, M) → (b, heads, M)."""
    return weights @ memory


class NTMMemory(nn.Module):
    """h_t = GRU([x_t, r_{t−1}], h_{t−1}); from h_t each head emits key, β, g, shift, γ (write heads also
    erase e and add a); write M_t = M_{t−1} ⊙ Π(1 − w eᵀ) + Σ w aᵀ, then read r_t = w_rᵀ M_t; y_t = W_o [h_t, r_t].

    Sequential by nature: forward runs the recurrence token by token. State: N·M + r·M + (r + w)·N + H
    numbers, whatever the length. Cost per token: 6·H·(d + r·M + H) (controller) + 2·H·P (heads)
    + (r + w)·(4·N·M + 20·N) + 4·w·N·M + 2·r·N·M + 2·(H + r·M)·d, O(n·(H² + N·M)) for n tokens.
    Params: 3·H·(d + r·M + H) + 6·H + (H + 1)·P + (H + r·M)·d (+ N·M learned init),
    with P = r·(M + 6) + w·(3·M + 6) head outputs.
    """

    def __init__(
        self,
        dim: int,
        *,
        memory_slots: int = 32,
        memory_width: int = 32,
        read_heads: int = 1,
        write_heads: int = 1,
        controller_size: int | None = None,
        memory_init: MemoryInit = "learned",
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim, self.memory_slots, self.memory_width = dim, memory_slots, memory_width
        self.read_heads, self.write_heads = read_heads, write_heads
        self.controller_size = controller_size if controller_size is not None else dim
        self.memory_init = memory_init
        N, M, r, w, H = memory_slots, memory_width, read_heads, write_heads, self.controller_size
        self.controller = nn.GRUCell(dim + r * M, H, **factory)
        self.read_sizes = [M, 1, 1, 3, 1]  # key, β, g, shift, γ
        self.write_sizes = [M, 1, 1, 3, 1, M, M]  # … and erase, add
        self.head_outputs = r * sum(self.read_sizes) + w * sum(self.write_sizes)
        self.heads = nn.Linear(H, self.head_outputs, **factory)
        self.out = nn.Linear(H + r * M, dim, bias=False, **factory)
        if memory_init == "learned":
            self.initial_memory = no_weight_decay(nn.Parameter(torch.empty(N, M, **factory)))
            nn.init.uniform_(self.initial_memory, -(M**-0.5), M**-0.5)
        else:
            self.register_parameter("initial_memory", None)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        device = device if device is not None else self.heads.weight.device
        dtype = dtype if dtype is not None else self.heads.weight.dtype
        N, M, r, w = self.memory_slots, self.memory_width, self.read_heads, self.write_heads
        if self.initial_memory is None:
            memory = torch.full((batch, N, M), _FIXED_MEMORY_VALUE, device=device, dtype=dtype)
        else:
            # a copy per row: sequences never share memory
            memory = self.initial_memory.to(device=device, dtype=dtype).unsqueeze(0).repeat(batch, 1, 1)
        focus = torch.zeros(N, device=device, dtype=dtype)
        focus[0] = 1  # every head starts focused on row 0, so shifts alone can walk the memory
        return {
            "memory": memory,
            "read": torch.zeros(batch, r, M, device=device, dtype=dtype),
            "w_read": focus.expand(batch, r, N).clone(),
            "w_write": focus.expand(batch, w, N).clone(),
            "h": torch.zeros(batch, self.controller_size, device=device, dtype=dtype),
        }

    def _head_params(self, raw: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
        """Split (b, heads, Σ sizes) into key, β, g, shift, γ[, erase, add] with their ranges."""
        key, beta, gate, shift, gamma, *rest = raw.split(sizes, dim=-1)
        params = (key, F.softplus(beta).squeeze(-1), torch.sigmoid(gate).squeeze(-1),
                  torch.softmax(shift, dim=-1), 1 + F.softplus(gamma).squeeze(-1))
        if rest:
            erase, add = rest
            params += (torch.sigmoid(erase), torch.tanh(add))
        return params

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        b = x_t.shape[0]
        r, w = self.read_heads, self.write_heads
        h = self.controller(torch.cat((x_t, state["read"].reshape(b, -1)), dim=-1), state["h"])
        raw = self.heads(h)
        raw_read, raw_write = raw.split((r * sum(self.read_sizes), w * sum(self.write_sizes)), dim=-1)
        memory = state["memory"]
        key, beta, gate, shift, gamma, erase, add = self._head_params(raw_write.view(b, w, -1), self.write_sizes)
        w_write = address(memory, key, beta, gate, shift, gamma, state["w_write"])
        memory = write(memory, w_write, erase, add)
        key, beta, gate, shift, gamma = self._head_params(raw_read.view(b, r, -1), self.read_sizes)
        w_read = address(memory, key, beta, gate, shift, gamma, state["w_read"])
        reads = read(memory, w_read)  # (b, r, M)
        y = self.out(torch.cat((h, reads.reshape(b, -1)), dim=-1))
        return y, {"memory": memory, "read": reads, "w_read": w_read, "w_write": w_write, "h": h}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        ys = []
        for x_t in x.unbind(1):
            y, state = self.step(x_t, state)
            ys.append(y)
        return torch.stack(ys, dim=1), state

    def flops_per_token(self, seq_len: int) -> float:
        d, N, M, r, w, H = self.dim, self.memory_slots, self.memory_width, self.read_heads, self.write_heads, self.controller_size
        controller = 6.0 * H * (d + r * M + H) + 12.0 * H
        addressing = (r + w) * (4.0 * N * M + 20.0 * N)
        return controller + 2.0 * H * self.head_outputs + addressing + 4.0 * w * N * M + 2.0 * r * N * M + 2.0 * (H + r * M) * d

    def state_numel(self, seq_len: int) -> int:
        N, M, r, w = self.memory_slots, self.memory_width, self.read_heads, self.write_heads
        return N * M + r * M + (r + w) * N + self.controller_size

    def param_count(self) -> int:
        d, N, M, r, H = self.dim, self.memory_slots, self.memory_width, self.read_heads, self.controller_size
        P = self.head_outputs
        learned = N * M if self.memory_init == "learned" else 0
        return 3 * H * (d + r * M + H) + 6 * H + (H + 1) * P + (H + r * M) * d + learned
