"""The smallest new mixer, as a user would add one: one block, one spec, one registration line.

tests/test_architecture.py uses it directly; `PULSE_TEST_REGISTER=toy_mixer pytest …` registers it
before the registry-wide tests are collected, which is how a test shows those tests cover a new
kind with no edits to them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pulse import contract, registry
from pulse.ops.documents import reset_rows, starts_mask, step_mask
from pulse.specs.base import Spec


class RunningMean(nn.Module):
    """y_t = W · (decay-weighted mean of x_1..x_t): the smallest causal mixer with a state.

    State: the running weighted sum s (b, d) and weight w (b,): s_t = γ s_{t−1} + x_t, w_t = γ w_{t−1} + 1;
    both start again from zero where a document starts (`doc_starts`).
    Cost: 2·d² + 3·d FLOPs per token. Params: d².
    """

    def __init__(self, dim: int, *, decay: float = 0.9, device=None, dtype=None):
        super().__init__()
        self.dim, self.decay = dim, decay
        self.proj = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        w = self.proj.weight
        return {"sum": torch.zeros(batch, self.dim, device=device or w.device, dtype=dtype or w.dtype),
                "weight": torch.zeros(batch, device=device or w.device, dtype=dtype or w.dtype)}

    def step(self, x_t: Tensor, state: dict[str, Tensor], *, doc_starts: Tensor | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        contract.check_input(self, x_t, ndim=2)
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device)
        if rows is not None:  # a document starts here: its rows forget the past
            state = reset_rows(state, self.init_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype), rows)
        s = self.decay * state["sum"] + x_t
        w = self.decay * state["weight"] + 1
        return self.proj(s / w.unsqueeze(-1)), {"sum": s, "weight": w}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None, *, doc_starts=None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        contract.check_input(self, x)
        state = state if state is not None else self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        starts = starts_mask(doc_starts, x.shape[0], x.shape[1], x.device)
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state, doc_starts=None if starts is None else starts[:, t])
            ys.append(y)
        return torch.stack(ys, dim=1), state

    def flops_per_token(self, seq_len: int) -> float:
        return 2.0 * self.dim**2 + 3.0 * self.dim

    def state_numel(self, seq_len: int) -> int:
        return self.dim + 1

    def param_count(self) -> int:
        return self.dim**2


class RunningMeanSpec(Spec):
    """Decay-weighted running mean of the tokens so far, then a linear map."""

    kind: Literal["running_mean"] = "running_mean"
    decay: float = Field(0.9, gt=0, lt=1, description="weight γ of the past at each step")


def register() -> None:
    registry.register("running_mean", role="mixer", spec=RunningMeanSpec, module=RunningMean)
