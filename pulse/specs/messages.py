"""Validation errors in words: a pydantic ValidationError → one paragraph naming the file, the dotted path, the
problem and the nearest valid key or registered kind."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from pulse import registry
from pulse.errors import did_you_mean
from pulse.specs.limits import _clip, _short, _suggest


def _strip(tp: Any) -> Any:
    """Unwrap Annotated[...] and Optional[...] down to the interesting type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel] | None, Any]:
    """Follow a pydantic error location: (dotted path parts, model owning the last key, type there)."""
    path: list[str] = []
    tp: Any = root
    owner: type[BaseModel] | None = None
    for item in loc:
        tp = _strip(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and item == _tag(tp) and item not in tp.model_fields:
            continue  # the discriminator tag of a one-member union
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            path.append(str(item))
            field = tp.model_fields.get(str(item))
            tp = field.annotation if field else None
        elif origin is dict:
            path.append(str(item))
            tp = typing.get_args(tp)[1]
        elif origin in (list, tuple):
            path.append(str(item))
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = {typing.get_args(m.model_fields["kind"].annotation)[0]: m for m in typing.get_args(tp)
                       if isinstance(m, type) and issubclass(m, BaseModel) and "kind" in m.model_fields}
            if item in members:
                tp = members[item]
            else:
                path.append(str(item))
                tp = None
        else:
            path.append(str(item))
            tp = None
    return path, owner, tp


def _tag(cls: type[BaseModel]) -> str | None:
    field = cls.model_fields.get("kind")
    return typing.get_args(field.annotation)[0] if field is not None and typing.get_args(field.annotation) else None


def _role_of(union: Any) -> str:
    union = _strip(union)
    for member in typing.get_args(union) or (union,):
        kind_field = getattr(member, "model_fields", {}).get("kind")
        if kind_field is not None:
            return registry.get(typing.get_args(kind_field.annotation)[0]).role
    return "component"


# Keys renamed when the slot bank got one vocabulary ("slot"; "state" is what forward/step carry).
RENAMED_KEYS: dict[str, str] = {
    "num_states": "num_slots",
    "state_dim": "slot_dim",
    "max_states": "max_slots",
    "min_states": "min_slots",
    "init_states": "init_slots",
    "token_states": "token_slots",
    "chunk_states": "chunk_slots",
    "global_states": "global_slots",
    "conv_kernel": "conv_size",
    "gate_type": "gate",
    "enable_communication": "communication",
}


def _unknown_key(key: str, fields: dict[str, Any]) -> str:
    new = RENAMED_KEYS.get(key)
    if new is not None and new in fields:
        return f"`{key}` was renamed `{new}`; write `{new}` instead"
    return f"unknown key `{key}`{did_you_mean(key, fields)}; valid keys here: {', '.join(fields)}"


def format_errors(err: ValidationError, root: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        path, owner, tp = _walk(root, tuple(e["loc"]))
        where = ".".join(path) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden" and owner is not None:
            msg = _unknown_key(path[-1], owner.model_fields)
        elif kind == "union_tag_invalid":
            tag = e["ctx"]["tag"]
            role = _role_of(tp)
            names = registry.kinds(role) if role != "component" else []
            msg = f"unknown {role} kind `{_clip(tag)}`{_suggest(tag, names)}; registered: {', '.join(names)}"
        elif kind == "union_tag_not_found":
            role = _role_of(tp)
            msg = f"missing `kind`; set kind to one of: {', '.join(registry.kinds(role))}"
        elif kind == "missing":
            msg = "required key is missing; add it"
        elif kind == "value_error":
            error = e.get("ctx", {}).get("error")
            msg = str(error) if error is not None else e["msg"]
            if getattr(error, "path", None):
                where = f"{where}.{error.path}" if path else error.path
        else:
            msg = f"{e['msg'][0].lower()}{e['msg'][1:]} (got {_short(e.get('input'))})"
        lines.append(f"  {where}: {msg}.")
    count = len(lines)
    head = f"{source}: {count} problem{'s' if count > 1 else ''} in the recipe:"
    return "\n".join([head, *lines])

