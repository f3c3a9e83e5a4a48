"""A bank of learnable slots with learnable importance; slots can be pruned and allocated.

# s slots (max_slots in the bank, s_a active) · d state dim
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.contract import no_weight_decay
from pulse.errors import PulseError


class StateManager(nn.Module):
    """Up to max_slots initial slot vectors S ∈ R^{max×d} and importance logits w ∈ R^{max}.

    A layer using the bank starts from the active rows of S, and every token's attention
    weight on slot i is scaled by σ(w_i) (a log σ(w_i) bias on its attention logit), so the
    importance scores are trained by the task. prune(θ) deactivates slots with σ(w_i) < θ;
    allocate(n) activates n inactive slots with fresh values. Inactive slots are skipped
    entirely: they cost no compute and no state. Params: max_slots·(d + 1).
    """

    def __init__(
        self,
        slot_dim: int,
        *,
        max_slots: int = 32,
        init_slots: int | None = None,
        init_importance: float = 2.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        init_slots = max_slots if init_slots is None else init_slots
        if not 1 <= init_slots <= max_slots:
            raise PulseError(f"init_slots ({init_slots}) must lie in 1..max_slots ({max_slots}).")
        self.slot_dim, self.max_slots, self.init_importance = slot_dim, max_slots, init_importance
        self.slots = no_weight_decay(nn.Parameter(torch.empty(max_slots, slot_dim, device=device, dtype=dtype)))
        self.importance = nn.Parameter(torch.empty(max_slots, device=device, dtype=dtype))
        # the persistent mask goes into checkpoints; the index list is the fast, device-free view of it
        self.register_buffer("active", torch.zeros(max_slots, dtype=torch.bool, device=device))
        self.register_buffer("active_index", torch.zeros(0, dtype=torch.long, device=device), persistent=False)
        self._active: list[int] = []
        self._reinit(list(range(max_slots)))
        self._set_active(list(range(init_slots)))
        self.register_load_state_dict_post_hook(_resync)

    def _reinit(self, index: list[int]) -> None:
        if self.slots.device.type == "meta":
            return
        with torch.no_grad():
            idx = torch.tensor(index, dtype=torch.long, device=self.slots.device)
            self.slots[idx] = torch.randn(len(index), self.slot_dim, device=self.slots.device, dtype=self.slots.dtype)
            self.importance[idx] = self.init_importance

    def _set_active(self, index: list[int]) -> None:
        self._active = sorted(index)
        device = self.active.device
        self.active_index = torch.tensor(self._active, dtype=torch.long, device=device)
        if device.type != "meta":
            mask = torch.zeros(self.max_slots, dtype=torch.bool, device=device)
            mask[self.active_index] = True
            self.active.copy_(mask)

    @property
    def num_active(self) -> int:
        return len(self._active)

    @property
    def active_slots(self) -> list[int]:
        return list(self._active)

    def importance_weights(self) -> Tensor:
        """σ(w_i) of the active slots, (s_a,)."""
        return torch.sigmoid(self.importance[self.active_index])

    def forward(self) -> tuple[Tensor, Tensor]:
        """The active slots' initial values (s_a, d) and their log-importance read bias (s_a,)."""
        return self.slots[self.active_index], F.logsigmoid(self.importance[self.active_index])

    def prune(self, threshold: float) -> int:
        """Deactivate active slots with σ(w_i) < threshold (never the last one); returns how many."""
        if self.slots.device.type == "meta":
            raise PulseError("cannot prune a StateManager on the meta device: its importance scores have no values.")
        weights = self.importance_weights().tolist()
        keep = [i for i, w in zip(self._active, weights) if w >= threshold]
        if not keep:
            keep = [self._active[max(range(len(weights)), key=weights.__getitem__)]]
        pruned = self.num_active - len(keep)
        self._set_active(keep)
        return pruned

    def allocate(self, n: int) -> list[int]:
        """Activate n inactive slots (lowest indices first) with freshly drawn values and the initial
        importance; returns their indices. Optimizer moments kept for those rows are the caller's to reset."""
        free = [i for i in range(self.max_slots) if i not in set(self._active)]
        if n < 0 or n > len(free):
            raise PulseError(
                f"cannot allocate {n} slots: {len(free)} of {self.max_slots} are inactive; "
                f"prune first or build the bank with a larger max_slots."
            )
        new = free[:n]
        self._reinit(new)
        self._set_active(self._active + new)
        return new

    def extra_repr(self) -> str:
        return f"slot_dim={self.slot_dim}, max_slots={self.max_slots}, active={self.num_active}"

    def param_count(self) -> int:
        return self.max_slots * (self.slot_dim + 1)


def _resync(module: StateManager, incompatible_keys) -> None:
    """After load_state_dict the persistent mask is the truth; rebuild the index from it."""
    if module.active.device.type != "meta":
        module._set_active(torch.nonzero(module.active).flatten().tolist())
