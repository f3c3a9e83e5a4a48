"""The strict base every spec derives from.

Beyond pydantic's own checks, every field of every spec is held to these, in one place:

- booleans are not numbers and text is not a number (`depth = true`, `depth = "4"`);
- a boolean is `true` or `false`, never `"yes"` or `1`;
- floats are finite (`lr = inf` is refused);
- integers have sane upper bounds: sizes by name (`SIZE_LIMITS`), every other
  integer at most `MAX_INT`, so nothing overflows a tensor size or hangs a build;
- strings are at most `MAX_STRING` characters.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

MAX_INT = 2**31 - 1
MAX_STRING = 4096
UNBOUNDED = {"seed"}
# sizes whose product is the model's cost; bounds far above any model this zoo builds
SIZE_LIMITS = {
    "dim": 65_536, "depth": 1024, "vocab_size": 2**22, "num_heads": 1024, "num_iterations": 1024,
    "num_slots": 65_536, "num_states": 65_536, "slot_dim": 65_536, "state_dim": 65_536, "d_state": 65_536,
    "max_slots": 65_536, "max_states": 65_536, "min_slots": 65_536, "min_states": 65_536,
    "init_slots": 65_536, "init_states": 65_536, "token_slots": 65_536, "token_states": 65_536,
    "chunk_slots": 65_536, "chunk_states": 65_536, "global_slots": 65_536, "global_states": 65_536,
    "memory_slots": 65_536, "memory_width": 65_536, "controller_size": 65_536, "input_dim": 65_536,
    "output_dim": 2**22, "expand": 64, "hidden_mult": 64, "dt_rank": 65_536, "read_heads": 1024,
    "write_heads": 1024, "top_k": 65_536, "conv_size": 4096, "conv_kernel": 4096, "chunk_size": 2**20,
    "seq_len": 2**24, "max_seq_len": 2**24, "batch_size": 2**20, "eval_batch_size": 2**20, "grad_accum": 2**16,
    "steps": 10**9, "num_train": 10**8, "num_test": 10**8, "num_kv_pairs": 2**20,
}


class Spec(BaseModel):
    """A validated, frozen description of one component. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _limits(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is not None:
                    check_value(name, field.annotation, value, name)
        return data

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


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _members(tp: Any) -> list[Any]:
    """Annotated and Optional stripped; the members of a union (one for a plain type)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) if a is not type(None) for m in _members(a)]
    return [tp]


def check_value(name: str, annotation: Any, value: Any, where: str) -> None:
    """Hold one raw value to its field's type strictly (see the module docstring); raise Problem."""
    if value is None:
        return
    members = _members(annotation)
    if len(members) != 1:
        return
    tp = members[0]
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise Problem(where, f"must be true or false, not {_show(value)}")
    elif tp is int:
        if isinstance(value, (bool, str)):
            raise Problem(
                where,
                f"must be a whole number, not {_show(value)}" + (" (a boolean)" if isinstance(value, bool) else ""),
            )
        if isinstance(value, (int, float)) and name not in UNBOUNDED:
            limit = SIZE_LIMITS.get(name, MAX_INT)
            if value > limit:
                value = int(value) if isinstance(value, int) or value < 1e18 else value
                raise Problem(where, f"{value:,} is beyond the sane limit of {limit:,} for `{name}`")
    elif tp is float:
        if isinstance(value, (bool, str)):
            raise Problem(where, f"must be a number, not {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Problem(where, f"must be finite, not {value}")
    elif tp is str:
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise Problem(where, f"is {len(value):,} characters long (limit {MAX_STRING:,})")
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        for i, item in enumerate(value):
            if args:
                check_value(name, args[min(i, len(args) - 1)], item, f"{where}.{i}")
    elif origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        for key, item in value.items():
            if len(args) == 2:
                check_value(name, args[1], item, f"{where}.{key}")
