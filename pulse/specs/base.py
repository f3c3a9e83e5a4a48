"""The strict base every spec derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A validated, frozen description of one component. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def check_dim(self, dim: int) -> None:
        """Cross-field checks that need the model width; raise ValueError with advice."""


class Problem(ValueError):
    """A cross-field problem located below the model that raised it (`path` is dotted, relative)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def divides(name: str, value: int, dim: int, what: str = "dim") -> None:
    if value <= 0 or dim % value:
        raise ValueError(f"{name} ({value}) must divide {what} ({dim}); pick a divisor of {dim}")
