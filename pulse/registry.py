"""The closed registry: one entry ties a `kind` to its spec class and its module class.

A kind is written once: the spec's fields are the module constructor's keyword arguments,
with the same defaults (a registry-wide test checks it), and the assembler's default builder
passes them through. A custom `builder` is only for kinds that compose other parts.

Recipes can only name kinds registered here, never an import path, so loading a
recipe never runs code from it.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pulse.errors import PulseError, did_you_mean

Role = Literal["mixer", "mlp", "norm", "positional", "model", "task"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True)
class Entry:
    kind: str
    role: str
    spec: type  # a pydantic model with a `kind: Literal[...]` field
    builder: Callable[..., Any] | None  # custom builder (spec, ctx) -> module; None = the default one
    doc: str
    module: type | None = None  # the class the default builder constructs
    defined_in: str = ""  # "pulse/blocks/…/file.py" (module) or the spec's file when there is no module
    rotary: bool = False  # the module applies rotary positions itself (a `rotary_base` argument)

    @property
    def buildable(self) -> bool:
        return self.builder is not None or self.module is not None


_ENTRIES: dict[str, Entry] = {}
_generation = 0


def register(
    kind: str,
    *,
    role: Role,
    spec: type,
    module: type | None = None,
    builder: Callable[..., Any] | None = None,
    rotary: bool = False,
) -> None:
    """Register `kind` with its spec class and the module class it builds (or a custom builder).

    A second registration is an error. With neither `module` nor `builder` the kind is applied
    inside other blocks and cannot be built alone (e.g. rotary positions).
    """
    global _generation
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if kind in _ENTRIES:
        raise ValueError(f"kind {kind!r} is already registered (role {_ENTRIES[kind].role})")
    declared = get_args(spec.model_fields["kind"].annotation)
    if declared != (kind,):
        raise ValueError(f"spec {spec.__name__} declares kind {declared}, expected ({kind!r},)")
    doc = (spec.__doc__ or "").strip().splitlines()
    _ENTRIES[kind] = Entry(kind, role, spec, builder, doc[0] if doc else "", module, _where(module or spec), rotary)
    _generation += 1


def unregister(kind: str) -> None:
    """Remove `kind` (for examples and tests that register a kind for a while); unknown kinds are an error."""
    global _generation
    get(kind)
    del _ENTRIES[kind]
    _generation += 1


def generation() -> int:
    """A counter that changes whenever the registry does (used to rebuild schemas)."""
    return _generation


def get(kind: str, role: str | None = None) -> Entry:
    entry = _ENTRIES.get(kind)
    if entry is None or (role is not None and entry.role != role):
        names = kinds(role)
        what = f"{role} kind" if role else "kind"
        raise PulseError(
            f"unknown {what} `{kind}`{did_you_mean(kind, names)}; registered: {', '.join(names)}."
        )
    return entry


def kinds(role: str | None = None) -> list[str]:
    return sorted(k for k, e in _ENTRIES.items() if role is None or e.role == role)


def entries(pattern: str = "*", role: str | None = None) -> list[Entry]:
    """Registered entries whose kind matches the glob `pattern`, optionally of one role."""
    if role is not None and role not in ROLES:
        raise PulseError(f"unknown role `{role}`{did_you_mean(role, ROLES)}; roles are {', '.join(ROLES)}.")
    return [
        _ENTRIES[k] for k in sorted(_ENTRIES)
        if fnmatch.fnmatch(k, pattern) and (role is None or _ENTRIES[k].role == role)
    ]


def _where(obj: type) -> str:
    """The file that defines `obj`, relative to the package's parent ("pulse/blocks/…")."""
    try:
        path = Path(inspect.getsourcefile(obj) or "").resolve()
    except TypeError:
        return obj.__module__
    root = Path(__file__).resolve().parent.parent
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
