"""Reading recipes: TOML (or JSON) → zoo card merge → --set overrides → validation.

Every failure is a PulseError naming the file, the dotted path and what to change.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pulse.errors import PulseError, PulseWarning, did_you_mean
from pulse.specs.limits import (
    MAX_FILE_CHARS,
    MAX_NESTING,
    _clip,
    _short,
    check_card_reference,
    check_limits,
    check_override_size,
)
from pulse.specs.messages import format_errors
from pulse.specs.recipe import RecipeBase, recipe_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL_KIND = "lm"


def zoo_dirs() -> list[Path]:
    """Where cards live: inside an installed wheel, then a source checkout's zoo/."""
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_zoo", here.parent / "zoo") if p.is_dir()]


def recipe_dirs() -> list[Path]:
    """Where shipped recipes live: inside an installed wheel, then a source checkout's recipes/."""
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "_recipes", here.parent / "recipes") if p.is_dir()]


def card_names() -> list[str]:
    return sorted({p.stem for d in zoo_dirs() for p in d.glob("*.toml")})


def recipe_names() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.toml")})


def named_recipe(name: str) -> Path | None:
    """The zoo card called `name` (with or without .toml), else the shipped recipe; None if neither."""
    bare = str(name).removesuffix(".toml")
    if "/" in bare or "\\" in bare:
        return None
    for d in (*zoo_dirs(), *recipe_dirs()):
        path = d / f"{bare}.toml"
        if path.is_file():
            return path
    return None


def find_recipe(name_or_path: str | Path) -> Path:
    """The file a command means: an existing path, else a zoo card, else a shipped recipe of that name.

    `pulse build pulse-small` and `pulse train mqar-hybrid` work from any directory; a
    path that exists always wins over a name. The one place names become files.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    found = named_recipe(str(name_or_path))
    if found is not None:
        return found
    text = str(name_or_path)
    names = card_names() + recipe_names()
    raise PulseError(
        f"{text}: no such file, and no zoo card or shipped recipe of that name"
        f"{did_you_mean(text.removesuffix('.toml'), names)}; "
        "check the path, or give a card (`pulse list --cards`) or a recipe name "
        f"({', '.join(recipe_names()) or 'none shipped'})."
    )


def card_path(name: str) -> Path:
    for d in zoo_dirs():
        path = d / f"{name}.toml"
        if path.is_file():
            return path
    names = card_names()
    raise PulseError(
        f"no zoo card named `{name}`{did_you_mean(name, names)}; available cards: {', '.join(names) or 'none'}."
    )


def yaml_refusal(path: Path) -> str:
    """The one line a YAML config gets: recipes are TOML, and how to write this one."""
    return (f"{path}: PULSE recipes are TOML, not YAML; write the same settings as {path.with_suffix('.toml')} "
            "with tables [model], [task] and [train] (`pulse cp pulse " + str(path.with_suffix(".toml")) +
            "` copies a recipe to start from, `pulse schema` describes every field).")


def read_table(path: str | Path) -> dict[str, Any]:
    """Parse a TOML or JSON file into a dict, with a clear error for a missing or broken file."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise PulseError(yaml_refusal(path))
    if not path.exists():
        raise PulseError(f"{path}: no such file; check the path (recipes live in recipes/, cards in zoo/).")
    if path.is_dir():
        raise PulseError(
            f"{path} is a directory; give a recipe file (.toml) or a checkpoint directory where a command accepts one."
        )
    try:
        if path.stat().st_size > 4 * MAX_FILE_CHARS:
            raise PulseError(f"{path}: {path.stat().st_size:,} bytes, more than any recipe needs "
                             f"(limit {MAX_FILE_CHARS:,} characters).")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PulseError(f"{path}: cannot read the file ({err}).") from None
    if len(text) > MAX_FILE_CHARS:
        raise PulseError(f"{path}: {len(text):,} characters, more than any recipe needs (limit {MAX_FILE_CHARS:,}).")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise PulseError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}.") from None
    except RecursionError:
        raise PulseError(f"{path}: nested too deeply to read (limit {MAX_NESTING} levels).") from None
    if not isinstance(data, dict):
        raise PulseError(f"{path}: expected a table at the top level.")
    check_limits(data, source=str(path))
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` wins; tables merge key by key, everything else is replaced — and so is a table whose `kind`
    `over` changes (another component: the old one's keys mean nothing to it)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and value.get("kind", old.get("kind")) == \
                old.get("kind"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` → (["a","b","c"], value). VALUE is read as TOML, else as a bare string."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise PulseError(f"--set `{_short(text)}`: expected DOTTED.PATH=VALUE, e.g. --set model.depth=6.")
    check_override_size(text, parts)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise PulseError(
            f"--set `{_short(text)}`: the value is nested too deeply (limit {MAX_NESTING} levels)."
        ) from None
    check_limits({parts[-1]: value}, source=f"--set {_clip(key)}")
    return parts, value


def set_path(data: dict[str, Any], parts: Sequence[str], value: Any, text: str) -> None:
    """data[a][b][c] = value for parts [a, b, c], making the tables on the way; `text` names the override."""
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PulseError(f"--set `{text}`: `{part}` is a value, not a table, so it has no keys.")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        set_path(data, parts, value, text)
    return data


def resolve_cards(model: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Replace `from = "NAME"` by the card's [model] table with this table merged over it."""
    if "from" not in model:
        return model
    name = model["from"]
    if not isinstance(name, str):
        raise PulseError(f"model.from must be a card name (a string), got {_short(name)}.")
    check_card_reference(name)
    if name in seen:
        raise PulseError(f"zoo cards refer to each other in a loop: {' → '.join((*seen, name))}.")
    path = card_path(name)
    card = read_table(path)
    extra = sorted(set(card) - {"model", "card"})
    if "model" not in card or extra:
        raise PulseError(f"{path}: a zoo card holds only [card] and [model] tables; found {sorted(card)}.")
    base = resolve_cards(dict(card["model"]), (*seen, name))
    rest = {k: v for k, v in model.items() if k != "from"}
    return deep_merge(base, rest)


def resolve(data: dict[str, Any], overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The raw recipe dict after overrides and card merging, ready for validation."""
    data = apply_overrides(data, overrides)
    # A zoo card is a recipe too: its [card] table describes it and builds nothing.
    data = {k: v for k, v in data.items() if k != "card"}
    if "model" not in data:
        raise PulseError("the recipe has no [model] table; add one, e.g. [model] from = \"transformer-small\".")
    if not isinstance(data["model"], dict):
        raise PulseError("`model` must be a table ([model]), not a value.")
    model = resolve_cards(data["model"])
    model.setdefault("kind", DEFAULT_MODEL_KIND)
    mixers = model.get("mixers")
    if isinstance(mixers, dict):
        model = {**model, "mixers": {name: migrate_mixer(table, f"model.mixers.{name}")
                                     for name, table in mixers.items()}}
    return {**data, "model": model}


# A `pulse` table with gate = "delta" is the kind `pulse_delta` now; its keys that only the chunk-recurrent
# gates read go (with their only values the delta path ever took), the rest carry over.
_DELTA_DROPS = {"gate": ("delta",), "local": ("conv",), "communication": (False,)}


def as_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored recipe (a checkpoint's, a run's, an export's config.json) with each field added since it was written
    set to what the recipe meant then, so old weights compute as they did: a text task without reset_at_eos ran its
    documents into each other; a pulse_routed mixer without gate renormalized its chosen gates."""
    if not isinstance(data, dict):
        return data  # not a recipe table: validation names what is wrong with it
    task = data.get("task")
    if isinstance(task, dict) and task.get("kind") == "text" and "reset_at_eos" not in task:
        data = {**data, "task": {**task, "reset_at_eos": False}}
    model = data.get("model")
    mixers = model.get("mixers") if isinstance(model, dict) else None
    if isinstance(mixers, dict) and any(_routed_without_gate(t) for t in mixers.values()):
        data = {**data, "model": {**model, "mixers": {
            name: {**t, "gate": "renormalized"} if _routed_without_gate(t) else t for name, t in mixers.items()}}}
    return data


def _routed_without_gate(table: Any) -> bool:
    return isinstance(table, dict) and table.get("kind") == "pulse_routed" and "gate" not in table


def migrate_mixer(table: Any, where: str = "the mixer") -> Any:
    """An old `kind = "pulse"`, `gate = "delta"` table as `kind = "pulse_delta"`, with a note saying so
    (a PulseWarning); anything else unchanged. Stored recipes and checkpoints go through it too, so old
    runs keep loading: the module and its weights' names are the same."""
    if not isinstance(table, dict) or table.get("kind") != "pulse" or table.get("gate") != "delta":
        return table
    clashes = [f"{key} = {json.dumps(table[key])}" for key, ok in _DELTA_DROPS.items()
               if key in table and table[key] not in ok]
    if clashes:
        raise PulseError(
            f"{where}: gate \"delta\" (now kind \"pulse_delta\") has no slot communication and its local path is "
            f"always its short conv, so {' and '.join(clashes)} cannot apply; remove them from this mixer's table."
        )
    warnings.warn(PulseWarning(
        f"{where}: kind \"pulse\" with gate \"delta\" was renamed kind \"pulse_delta\"; write "
        "kind = \"pulse_delta\" and drop gate (and local, communication) — it loads as before meanwhile."
    ), stacklevel=2)
    return {"kind": "pulse_delta", **{k: v for k, v in table.items() if k not in ("kind", *_DELTA_DROPS)}}


def validate(data: dict[str, Any], *, source: str = "<recipe>") -> RecipeBase:
    cls = recipe_model()
    try:
        recipe = cls.model_validate(data)
    except ValidationError as err:
        raise PulseError(format_errors(err, cls, source)) from None
    recipe._source = source
    return recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> RecipeBase:
    """Read, merge, override and validate a recipe file, zoo card name or shipped recipe name.

    Raises PulseError on any problem.
    """
    overrides = list(overrides)
    path = find_recipe(path)
    data = read_table(path)
    source = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
    return validate(resolve(data, overrides), source=source)


def recipe_from_dict(data: dict[str, Any], overrides: Iterable[str] = (), *, source: str = "<dict>") -> RecipeBase:
    check_limits(data, source=source)
    return validate(resolve(data, overrides), source=source)
