"""What a registered kind is and takes, for `pulse list KIND`, docs and tools."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

from pulse import registry
from pulse.specs.recipe import spec_class

REQUIRED = "required"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any  # REQUIRED when the recipe must give it
    description: str


@dataclass(frozen=True)
class KindInfo:
    kind: str
    role: str
    doc: str  # the spec's whole docstring
    defined_in: str  # the file of the module (or of the spec, for kinds without a module)
    parameters: list[Parameter]


def type_name(annotation: Any) -> str:
    """`int`, `float | None`, or the choices of a Literal: `gru | lstm | mingru`."""
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pulse.specs.", "")


def describe(kind: str) -> KindInfo:
    """The role, documentation, defining file and parameters (type, default, meaning) of `kind`."""
    entry = registry.get(kind)
    params = []
    for name, field in spec_class(kind).model_fields.items():
        if name == "kind":
            continue
        if field.is_required():
            default: Any = REQUIRED
        else:
            default = field.get_default(call_default_factory=True)
            default = getattr(default, "model_dump", lambda d=default: d)()
        params.append(Parameter(name, type_name(field.annotation), default, field.description or ""))
    return KindInfo(kind, entry.role, inspect.cleandoc(entry.spec.__doc__ or ""), entry.defined_in, params)
