"""How many slots each chunk may use, decided causally from the content seen so far.

# b batch · n chunks · c chunk size · d model · f features · m max_slots
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError


class AdaptiveStateAllocator(nn.Module):
    """Per-chunk slot budget from the chunks before it, with soft masks so it is trained.

    p_t = W_p x_t; a completed chunk j gives φ_j = [mean_t p_t, log(var_t p_t + ε)];
    chunk k gets n_k = min + (max − min)·σ(w·mean_{j<k} φ_j + b) slots: slot i < min is
    always on, slot i ≥ min has mask m_i = σ((n_k − i − ½)/τ). Cost: 2·d·f FLOPs per token
    plus O(f + m) per chunk. Params: d·f + 2·f + 1.
    """

    def __init__(
        self,
        dim: int,
        *,
        min_slots: int = 4,
        max_slots: int = 16,
        features: int = 8,
        temperature: float = 0.5,
        eps: float = 1e-4,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if not 1 <= min_slots <= max_slots:
            raise PulseError(f"need 1 ≤ min_slots ({min_slots}) ≤ max_slots ({max_slots}).")
        if temperature <= 0:
            raise PulseError(f"temperature must be > 0, got {temperature}.")
        self.dim, self.min_slots, self.max_slots = dim, min_slots, max_slots
        self.features, self.temperature, self.eps = features, temperature, eps
        self.proj = nn.Linear(dim, features, bias=False, device=device, dtype=dtype)
        self.head = nn.Linear(2 * features, 1, device=device, dtype=dtype)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        """Running sum of chunk statistics and the number of chunks summed."""
        device = device if device is not None else self.proj.weight.device
        dtype = dtype if dtype is not None else self.proj.weight.dtype
        return {
            "sum": torch.zeros(batch, 2 * self.features, device=device, dtype=dtype),
            "count": torch.zeros(batch, 1, device=device, dtype=dtype),
        }

    def token_features(self, x: Tensor) -> Tensor:
        """p_t = W_p x_t, (…, t, f)."""
        return self.proj(x)

    def chunk_stats(self, p: Tensor) -> Tensor:
        """φ of complete chunks p (b, n, c, f) → (b, n, 2f)."""
        mean = p.mean(dim=-2)
        var = (p - mean.unsqueeze(-2)).square().mean(dim=-2)
        return torch.cat((mean, torch.log(var + self.eps)), dim=-1)

    def budget(self, mean_stats: Tensor) -> Tensor:
        """n = min + (max − min)·σ(w·φ̄ + b) from mean statistics (…, 2f) → (…,)."""
        share = torch.sigmoid(self.head(mean_stats).squeeze(-1))
        return self.min_slots + (self.max_slots - self.min_slots) * share

    def budgets(self, stats: Tensor, state: dict[str, Tensor], num_chunks: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Budgets (b, num_chunks) of the chunks that start now, given statistics (b, n, 2f) of the n
        chunks completed now (num_chunks ∈ {n, n+1}); chunk j sees the state and chunks < j only."""
        n = stats.shape[1]
        # (b, n+1, 2f)
        prefix = torch.cat((stats.new_zeros(stats.shape[0], 1, stats.shape[2]), stats.cumsum(dim=1)), dim=1)
        sums = state["sum"].unsqueeze(1) + prefix
        counts = (
            state["count"].unsqueeze(1) + torch.arange(n + 1, device=stats.device, dtype=stats.dtype).view(1, -1, 1)
        )
        budget = self.budget(sums / counts.clamp(min=1.0))[:, :num_chunks]
        return budget, {"sum": sums[:, -1], "count": counts[:, -1]}

    def masks(self, budget: Tensor) -> tuple[Tensor, Tensor]:
        """Soft slot masks m (…, max_slots) for budgets (…) and their logs (for attention biases)."""
        index = torch.arange(self.max_slots, device=budget.device, dtype=budget.dtype)
        logits = (budget.unsqueeze(-1) - index - 0.5) / self.temperature
        on = index < self.min_slots
        return torch.where(on, 1.0, torch.sigmoid(logits)), torch.where(on, 0.0, F.logsigmoid(logits))

    def forward(
        self, x: Tensor, *, chunk_size: int, state: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Budgets (b, ⌈t/c⌉) for the chunks of x (b, t, d), which starts at a chunk boundary; the state
        carries the statistics of complete chunks (a trailing partial chunk is not counted)."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise PulseError(f"AdaptiveStateAllocator expects (batch, time, {self.dim}), got {tuple(x.shape)}.")
        b, t, _ = x.shape
        state = self.init_state(b, device=x.device, dtype=x.dtype) if state is None else state
        n_full = t // chunk_size
        p = self.token_features(x[:, : n_full * chunk_size]).unflatten(1, (n_full, chunk_size))
        return self.budgets(self.chunk_stats(p), state, -(-t // chunk_size))

    def flops(self, chunk_size: int) -> float:
        """Forward FLOPs per token when budgets are set every chunk_size tokens."""
        return 2.0 * self.dim * self.features + (8.0 * self.features + 4.0 * self.max_slots) / chunk_size

    def param_count(self) -> int:
        return self.dim * self.features + 2 * self.features + 1
