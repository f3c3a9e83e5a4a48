"""What a builder needs besides its spec."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class BuildContext:
    """Model-level facts a component builder may use."""

    dim: int
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None
    rotary_base: float | None = None  # set when the model uses rotary positions

    def factory(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype}

    def with_dim(self, dim: int) -> "BuildContext":
        return replace(self, dim=dim)
