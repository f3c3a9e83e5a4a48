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
from pulse.ops import backend, ntm_step
from pulse.ops.documents import DocStarts, starts_mask, step_mask

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


class _Deferred(torch.autograd.Function):
    """Zeros (b, t, n) whose gradient becomes the gradient of `weight` (n, k) in one matmul.

    A loop that computes u_t = a_t W_detachedᵀ + zeros_t gets dL/dzeros_t = dL/du_t; after
    the loop `holder[key]` holds the a_t, and dL/dW = Σ_t (dL/du_t)ᵀ a_t — one product over
    all tokens instead of one outer product and one accumulation per token.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, holder: dict, key: str, b: int, t: int) -> Tensor:
        ctx.holder, ctx.key = holder, key
        return weight.new_zeros(b, t, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        inputs = torch.stack(ctx.holder[ctx.key], dim=1)  # (b, t, k)
        return grad.flatten(0, 1).t() @ inputs.flatten(0, 1), None, None, None, None


class NTMMemory(nn.Module):
    """h_t = GRU([x_t, r_{t−1}], h_{t−1}); from h_t each head emits key, β, g, shift, γ (write heads also
    erase e and add a); write M_t = M_{t−1} ⊙ Π(1 − w eᵀ) + Σ w aᵀ, then read r_t = w_rᵀ M_t; y_t = W_o [h_t, r_t].

    Sequential by nature: forward runs the recurrence token by token (a fused loop equal to
    `step_reference`, one autograd node per token: pulse.ops.ntm_step). State: N·M + r·M + (r + w)·N + H
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
        order, sizes = self._fused_layout()
        self._fused_sizes = tuple(sizes)
        # not saved with the weights: it follows from the sizes
        self.register_buffer("_head_order", torch.tensor(order, device=device), persistent=False)
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
        """Split (b, heads, Σ sizes) into key, β, g, shift, γ[, erase, add] with their ranges (the reference split)."""
        key, beta, gate, shift, gamma, *rest = raw.split(sizes, dim=-1)
        params = (key, F.softplus(beta).squeeze(-1), torch.sigmoid(gate).squeeze(-1),
                  torch.softmax(shift, dim=-1), 1 + F.softplus(gamma).squeeze(-1))
        if rest:
            erase, add = rest
            params += (torch.sigmoid(erase), torch.tanh(add))
        return params

    def _fused_layout(self) -> tuple[list[int], list[int]]:
        """A row order of `heads` that puts outputs sharing an activation side by side.

        Order: keys (w·M, r·M) · softplus block β, γ (2·(w + r)) · sigmoid block g, erase (w + r + w·M)
        · shift logits reversed (3·(w + r)) · add (w·M); write heads before read heads in each.
        Reversed shifts make the shift a correlation with the window [w_{i−1}, w_i, w_{i+1}].
        """
        r, w, M = self.read_heads, self.write_heads, self.memory_width
        rs, ws = sum(self.read_sizes), sum(self.write_sizes)
        wbase = [r * rs + i * ws for i in range(w)]  # first row of write head i
        rbase = [i * rs for i in range(r)]
        # offsets inside one head: key 0, β M, g M+1, shift M+2..M+4, γ M+5, erase M+6, add 2M+6
        rows = lambda bases, lo, hi: [b + j for b in bases for j in range(lo, hi)]  # noqa: E731
        order = (
            rows(wbase, 0, M) + rows(rbase, 0, M)
            + rows(wbase, M, M + 1) + rows(rbase, M, M + 1) + rows(wbase, M + 5, M + 6) + rows(rbase, M + 5, M + 6)
            + rows(wbase, M + 1, M + 2) + rows(rbase, M + 1, M + 2) + rows(wbase, M + 6, 2 * M + 6)
            + [b + M + 4 - j for b in wbase + rbase for j in range(3)]
            + rows(wbase, 2 * M + 6, 3 * M + 6)
        )
        sizes = [(w + r) * M, 2 * (w + r), w + r + w * M, 3 * (w + r), w * M]
        return order, sizes

    def _run(self, xs: Tensor, state: dict[str, Tensor], resets: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The recurrence over precomputed controller inputs xs = W_ix x + b_i (b, t, 3H); y (b, t, d).

        Everything that does not depend on the previous token (the input half of the controller's
        projection, the output projection, the reordering of the head rows) is done once outside
        the loop. Each token is one autograd node (`ntm_step.TokenStep`): about 60 small kernels
        forward and 90 in its hand-written backward, where autograd over the plain step would record
        ~150 nodes. That is what bounds this block: content addressing reads the memory as the
        previous token left it, so tokens cannot be batched, and per-kernel overhead, not
        arithmetic, sets the time on every device.
        """
        b, t = xs.shape[0], xs.shape[1]
        M, r, w = self.memory_width, self.read_heads, self.write_heads
        cell = self.controller
        order, sizes = self._head_order, self._fused_sizes
        # the loop multiplies by detached weights; each weight's gradient is one matmul after it (_Deferred)
        holder: dict[str, list[Tensor]] = {"reads": [], "h_prev": [], "h": []}
        w_read_in, w_hh = cell.weight_ih[:, self.dim :], cell.weight_hh
        w_heads, b_heads = self.heads.weight.index_select(0, order), self.heads.bias.index_select(0, order)
        xs = (xs + _Deferred.apply(w_read_in, holder, "reads", b, t)).unbind(1)
        ghs = (cell.bias_hh + _Deferred.apply(w_hh, holder, "h_prev", b, t)).unbind(1)
        raws = (b_heads + _Deferred.apply(w_heads, holder, "h", b, t)).unbind(1)
        w_read_in, w_hh, w_heads = w_read_in.detach().t(), w_hh.detach().t(), w_heads.detach().t()
        memory, reads, h = state["memory"], state["read"], state["h"]
        w_prev = torch.cat((state["w_write"], state["w_read"]), dim=1)  # (b, w + r, N)
        # one autograd node per token, its backward written out (pulse.ops.ntm_step); on CUDA both halves
        # run compiled (PULSE_COMPILE)
        forward = backend.step_function(self, "token_step", ntm_step.token_forward, memory.device)
        backward = backend.step_function(self, "token_backward", ntm_step.token_backward, memory.device)
        hs, rs = [], []
        fresh = None if resets is None else self.init_state(b, device=memory.device, dtype=memory.dtype)
        starts = [None] * t if resets is None else resets.unbind(1)
        for x_t, gh_t, raw_t, start in zip(xs, ghs, raws, starts):
            if start is not None:  # a document starts here: its rows begin from the initial state
                memory, reads, h, w_prev = (
                    torch.where(start.view(-1, *(1,) * (z.ndim - 1)), f, z) for z, f in (
                        (memory, fresh["memory"]), (reads, fresh["read"]), (h, fresh["h"]),
                        (w_prev, torch.cat((fresh["w_write"], fresh["w_read"]), dim=1))))
            holder["reads"].append(reads.detach().reshape(b, r * M))
            holder["h_prev"].append(h.detach())
            h, memory, reads, w_prev = ntm_step.TokenStep.apply(
                forward, backward, sizes, x_t, gh_t, raw_t, memory, reads, h, w_prev, w_read_in, w_hh, w_heads
            )
            holder["h"].append(h.detach())
            hs.append(h)
            rs.append(reads.reshape(b, r * M))
        y = self.out(torch.cat((torch.stack(hs, dim=1), torch.stack(rs, dim=1)), dim=-1))
        new = {"memory": memory, "read": reads, "w_read": w_prev[:, w:], "w_write": w_prev[:, :w], "h": h}
        return y, new

    def _inputs(self, x: Tensor) -> Tensor:
        """The token half of the controller's input projection for every token at once, (b, t, 3H)."""
        return F.linear(x, self.controller.weight_ih[:, : self.dim], self.controller.bias_ih)

    def step_reference(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One token written plainly with nn.GRUCell and the exported `address`/`write`/`read`: the reference."""
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

    def step(self, x_t: Tensor, state: dict[str, Tensor], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, type(self).__name__)
        y, state = self._run(self._inputs(x_t.unsqueeze(1)), state, None if rows is None else rows.unsqueeze(1))
        return y.squeeze(1), state

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Tensor]]:
        check_input(self, x)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        resets = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device, type(self).__name__)
        return self._run(self._inputs(x), state, resets)

    def flops_per_token(self, seq_len: int) -> float:
        d, N, M, r, w, H = (
            self.dim, self.memory_slots, self.memory_width, self.read_heads, self.write_heads, self.controller_size
        )
        controller = 6.0 * H * (d + r * M + H) + 12.0 * H
        addressing = (r + w) * (4.0 * N * M + 20.0 * N)
        return (
            controller + 2.0 * H * self.head_outputs + addressing + 4.0 * w * N * M + 2.0 * r * N * M
            + 2.0 * (H + r * M) * d
        )

    def state_numel(self, seq_len: int) -> int:
        N, M, r, w = self.memory_slots, self.memory_width, self.read_heads, self.write_heads
        return N * M + r * M + (r + w) * N + self.controller_size

    def param_count(self) -> int:
        d, N, M, r, H = self.dim, self.memory_slots, self.memory_width, self.read_heads, self.controller_size
        P = self.head_outputs
        learned = N * M if self.memory_init == "learned" else 0
        return 3 * H * (d + r * M + H) + 6 * H + (H + 1) * P + (H + r * M) * d + learned
