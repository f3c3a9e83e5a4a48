"""Limits on raw recipe tables, checked before anything is merged, validated or built.

Field-level limits (booleans are not numbers, finite floats, size caps) live in
pulse.specs.base; here: nesting, string / list / key lengths, finite numbers anywhere,
`--set` path length, `from` as a card name, and paths inside stored recipes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pulse.errors import PulseError, did_you_mean

MAX_FILE_CHARS = 1_000_000
MAX_NESTING = 12
MAX_STRING = 4096
MAX_ITEMS = 4096
MAX_KEY = 128
MAX_SET_PARTS = 12
MAX_CARD_NAME = 128


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters so a hostile value cannot flood the message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _clip(value: Any, limit: int = 60) -> str:
    """str(value), cut to `limit` characters (for names shown in backticks)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _suggest(word: Any, choices: Iterable[str]) -> str:
    """did_you_mean, skipped for words far longer than any name (it costs time per character)."""
    return did_you_mean(word, choices) if isinstance(word, str) and len(word) <= MAX_KEY else ""


def check_limits(data: Any, *, source: str) -> None:
    """Sane sizes for a raw recipe: nesting, string and list lengths, key lengths, finite numbers.

    Walks iteratively (a hostile file cannot exhaust the stack) and stops at the first
    problem with a short message naming the dotted path.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, level = stack.pop()
        at = where or "(top level)"
        if level > MAX_NESTING:
            raise PulseError(f"{source}: {at} is nested {level} levels deep; recipes need at most {MAX_NESTING}.")
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise PulseError(f"{source}: {at} is a string of {len(value):,} characters (limit {MAX_STRING:,}): "
                             f"{_short(value, 40)}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise PulseError(f"{source}: {at} is {value}; every number in a recipe must be finite.")
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:
                raise PulseError(f"{source}: {at} has {len(value):,} items (limit {MAX_ITEMS:,}).")
            stack.extend((v, f"{where}[{i}]", level + 1) for i, v in enumerate(value))
        elif isinstance(value, dict):
            if len(value) > MAX_ITEMS:
                raise PulseError(f"{source}: {at} has {len(value):,} keys (limit {MAX_ITEMS:,}).")
            for key, v in value.items():
                if len(str(key)) > MAX_KEY:
                    raise PulseError(f"{source}: a key under {at} is {len(str(key)):,} characters long "
                                     f"(limit {MAX_KEY}): {_short(key, 40)}.")
                stack.append((v, f"{where}.{key}" if where else str(key), level + 1))


def check_override_size(text: str, parts: list[str]) -> None:
    if len(parts) > MAX_SET_PARTS or any(len(p) > MAX_KEY for p in parts):
        raise PulseError(f"--set `{_short(text)}`: the path has {len(parts)} parts; recipe paths have at most "
                         f"{MAX_SET_PARTS}, each at most {MAX_KEY} characters.")


def check_card_reference(name: str) -> None:
    """`from` names a zoo card; it is never a file path (no separators, no `..`, not absolute)."""
    if len(name) > MAX_CARD_NAME or not name or any(c in name for c in "/\\:") or name.startswith(("~", ".")):
        raise PulseError(
            f"model.from = {_short(name)}: `from` takes the name of a zoo card (see `pulse list --cards`), "
            "not a path; card names are short and have no `/`, `\\`, `..` or leading dot."
        )


RISKY_PATHS = ("model.from", "task.path", "task.pattern", "task.tokenizer", "task.cache_dir", "bench.vs")


def check_stored_paths(data: dict[str, Any], overrides: Iterable[str] = (), *, source: str,
                       typed: Iterable[str] = ()) -> None:
    """Refuse file paths inside a *stored* recipe (a checkpoint's, a run directory's) that point outside it.

    A stored file must not steer a command to arbitrary files: `model.from` (stored
    recipes are already resolved), an absolute or `..` `task.path`, `bench.vs` entries.
    Values the user typed — by --set (`overrides`) or a whole table (`typed`) — are theirs to choose.
    """
    mine = [o.partition("=")[0].strip().split(".") for o in overrides] + [t.split(".") for t in typed]
    for dotted in RISKY_PATHS:
        parts = dotted.split(".")
        if any(parts[: len(m)] == m for m in mine):
            continue
        table = data.get(parts[0])
        value = table.get(parts[1]) if isinstance(table, dict) else None
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if dotted == "model.from" or not isinstance(v, str) or _escapes(v)]
        if bad:
            raise PulseError(
                f"{source}: its stored recipe sets {dotted} = {_short(bad[0])}; "
                "a path stored in a file is not followed (it could point anywhere). "
                f"Give it yourself on the command line, e.g. --set {dotted}=..."
            )


def _escapes(path: str) -> bool:
    p = Path(path)
    return p.is_absolute() or path.startswith("~") or ".." in p.parts
