"""One way in: whatever a user points a command at, opened into one Source.

`open_source` is the one place that decides what a path or name is:

- a recipe file (.toml or .json), a zoo card or a shipped recipe name: a recipe, fresh weights;
- a checkpoint directory (model.safetensors inside) or a .safetensors file: its stored recipe
  and its weights;
- a run directory (`pulse train --out`): its newest weights, the final ones or a step
  checkpoint's, whichever is newer (an interrupted run has only the latter); a damaged
  newest checkpoint is skipped with a note, as `pulse train` does when it resumes;
- a pickle file (.pt, .pth, .bin, .ckpt): refused, PULSE never unpickles.

Every command (`build`, `summarize`, `validate`, `bench`, `generate`, `eval`, `viz`, `export`,
`train`, `train --init`), `PulseForCausalLM.from_pretrained`, `create_model`, `load_checkpoint`
and `evaluate_checkpoint` open what they are given here, so one file gives one answer.

`--set` on a stored recipe (a checkpoint's or a run's) applies to every table but [model]:
the weights fix the model, so a [model] override is refused (start from a recipe to change
it). Paths stored in a recipe (task.path, task.pattern, bench.vs) are followed only by a
command that reads them, and only after `Source.check_paths`: a stored path that could point
anywhere (`..`, a bench list) is refused unless the user typed it; the task's own absolute
files and folders (task.path, task.cache_dir, task.tokenizer) are followed where they exist on
this machine, with a note, and named with the `--set` to give where they do not. Generating
from a run trained on a corpus that is not on this machine needs no corpus at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pulse.assemble import build_model
from pulse.errors import PulseError
from pulse.specs.limits import check_stored_paths
from pulse.specs.load import as_stored, find_recipe, named_recipe, read_table, recipe_from_dict, resolve, validate
from pulse.specs.recipe import RecipeBase
from pulse.storage import hf_dir
from pulse.storage.checkpoint import RECIPE, WEIGHTS, Unverified, load_weights, read_stored_recipe
from pulse.storage.runfiles import HEAD, is_run, marked_recipe, newest_weights

SEED_WEIGHTS = ("model.pt", "model.pth", "pytorch_model.bin")  # names the original PULSE gave a run's weights
PICKLE = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
WHAT_TO_GIVE = ("give a recipe (.toml), a zoo card or shipped recipe name (`pulse list`), a checkpoint directory "
                "or a run directory (`pulse train --out`)")


@dataclass
class Source:
    """What a path or name opened into: the recipe, and where the weights come from (None: fresh)."""

    recipe: RecipeBase
    origin: str  # "recipe", "checkpoint" or "run"
    location: Path  # what was opened (a recipe name resolves to its file)
    weights: Path | None = None  # the model.safetensors the weights come from
    step: int | None = None  # the training step of those weights, where known
    stored: dict[str, Any] | None = None  # the stored recipe as read (before --set), for path checks
    overrides: tuple[str, ...] = ()
    typed: tuple[str, ...] = ()  # tables the user gave whole (eval --task), whose paths are theirs
    allow_unverified: bool = False
    notes: list[str] = field(default_factory=list)  # what the user should be told (a skipped damaged checkpoint)
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face export (origin "hf")

    @property
    def trained(self) -> bool:
        return self.weights is not None

    @property
    def folder(self) -> Path:
        """The directory results are written beside: the run or checkpoint directory opened (or, for a
        file — a recipe, a .safetensors — the directory holding it)."""
        return self.location if self.location.is_dir() else self.location.parent

    @property
    def head(self) -> Path | None:
        """The task head saved beside the weights (head.safetensors), if there is one."""
        if self.weights is None:
            return None
        path = self.weights.parent / HEAD
        return path if path.is_file() else None

    @property
    def tokenizer(self):
        """A language model's tokenizer, for every command: pulse.data.tokenizer.tokenizer_of given the one stored
        beside the weights (which wins over the one the recipe names)."""
        from pulse.data.tokenizer import tokenizer_of

        stored = self.stored_tokenizer() if getattr(self.recipe.model, "kind", None) == "lm" else None
        try:
            return tokenizer_of(self.recipe, stored=stored)
        except PulseError as err:
            raise PulseError(f"{self.location}: {err}") from None

    def stored_tokenizer(self):
        """The tokenizer file saved with the weights (checked against their metadata), or None."""
        from pulse.data.tokenizer import stored_tokenizer
        from pulse.storage.checkpoint import read_metadata

        if self.weights is None:
            return None
        if self.origin == "hf":
            return hf_dir.read_tokenizer(self.weights.parent)
        return stored_tokenizer(self.weights.parent, read_metadata(self.weights))

    def describe(self) -> str:
        if self.weights is None:
            return f"{self.location} (a recipe: fresh weights)" if self.origin == "recipe" else str(self.location)
        step = f", step {self.step}" if self.step is not None else ""
        return f"{self.weights.parent}{step}"

    def require_weights(self, what: str) -> Path:
        """The weights file, or a PulseError saying why `what` cannot run without one."""
        if self.weights is not None:
            return self.weights
        if self.origin == "run":
            raise PulseError(f"{self.location} holds a run that has written no weights yet (it stopped before its "
                             f"first checkpoint), so {what} has nothing to load; train it on (`pulse train "
                             f"{self.location}`) or give a checkpoint.")
        raise PulseError(f"{self.location} is a recipe, which has no trained weights, so {what} has nothing to load; "
                         "give a checkpoint or run directory (`pulse train --out`, `pulse build --out`).")

    def build(self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
              load: bool = True) -> nn.Module:
        """The model: with the source's weights loaded, or freshly initialized for a recipe (or load=False).

        A stored source without weights (a run stopped before its first checkpoint) is refused
        rather than silently given fresh weights.
        """
        if load and self.origin != "recipe":
            self.require_weights("loading it")
        model = build_model(self.recipe, device=device, dtype=dtype)
        if load and self.weights is not None:
            if self.origin == "hf":
                hf_dir.load_hf_weights(model, self.weights, self.hf_config, self.allow_unverified)
            else:
                load_weights(model, self.weights, allow_unverified=self.allow_unverified)
        return model

    def check_paths(self, *tables: str, unused: tuple[str, ...] = ()) -> None:
        """Before following a path the stored recipe holds in `tables` ("task", "bench"): refuse one that could
        point anywhere (absolute, `~`, `..`) unless the user typed it (--set, or a whole table), or it is one of
        the task's files or folders (task.path, task.cache_dir, task.tokenizer), absolute and existing on this
        machine: then it is followed, with a note. `unused` names dotted paths the command will not follow
        (task.tokenizer, when the weights' own tokenizer is used)."""
        if self.stored is None:
            return
        typed = (*self.typed, *unused)
        found = self._stored_task_paths(typed) if "task" in tables else ()
        check_stored_paths({t: self.stored.get(t) for t in tables if t in self.stored}, self.overrides,
                           source=str(self.weights or self.location), typed=(*typed, *found))

    def _stored_task_paths(self, typed: tuple[str, ...]) -> list[str]:
        """The stored absolute (or `~`) task paths that exist here, said in a note each; one that does not exist is a
        PulseError naming it and the --set that points at the user's copy."""
        import warnings

        from pulse.errors import PulseWarning

        task = self.stored.get("task") if isinstance(self.stored.get("task"), dict) else {}
        mine = {o.partition("=")[0].strip() for o in self.overrides} | set(typed)
        if "task" in mine:  # the user gave the whole table
            return []
        found = []
        for key, what, instead in (("path", "corpus", "point at your copy of the corpus"),
                                   ("cache_dir", "token cache", "give a folder for the token cache"),
                                   ("tokenizer", "tokenizer", "point at your copy of the tokenizer file")):
            value, dotted = task.get(key), f"task.{key}"
            if dotted in mine or not isinstance(value, str) or not Path(value).expanduser().is_absolute():
                continue  # relative ones: inside the working directory, or (`..`) refused as before
            if not Path(value).expanduser().exists():
                raise PulseError(f"{self.weights or self.location}: it was trained with {dotted} = {value!r}, which "
                                 f"does not exist on this machine; {instead} with --set {dotted}=PATH.")
            warnings.warn(PulseWarning(f"using the {what} at {dotted} = {value!r}, stored with the run (it exists on "
                                       f"this machine); --set {dotted}=PATH uses another."), stacklevel=3)
            found.append(dotted)
        return found


def open_source(source: str | Path, overrides: Iterable[str] = (), *, tables: Mapping[str, Any] | None = None,
                allow_unverified: bool = False) -> Source:
    """Open a recipe file or name, a checkpoint or a run directory (see the module docstring).

    `overrides` are --set strings; `tables` replace whole tables of a stored recipe before
    them (`pulse eval --task`). allow_unverified accepts a checkpoint that lacks its recipe
    hash or checksum.
    """
    overrides = tuple(overrides)
    path = _seed_weights_path(Path(source))
    if path.suffix.lower() in (".yaml", ".yml"):
        from pulse.specs.load import yaml_refusal

        raise PulseError(yaml_refusal(path))
    if path.suffix.lower() in PICKLE:
        raise PulseError(f"{path} is a pickle file (`{path.suffix}`); PULSE never loads pickle, because unpickling "
                         f"runs code. PULSE checkpoints are safetensors directories: {WHAT_TO_GIVE}.")
    if not path.exists() and named_recipe(str(source)) is None:
        if len(path.parts) > 1 or path.suffix == ".safetensors":
            raise PulseError(f"{path}: no such file or directory; check the path, or {WHAT_TO_GIVE}.")
        find_recipe(source)  # raises: no such file, and no card or recipe of that name (with the nearest names)
    if path.is_dir():
        return _open_directory(path, overrides, tables, allow_unverified)
    if path.suffix == ".safetensors":
        return _open_stored(path, path, "checkpoint", overrides, tables, allow_unverified, step=None)
    if tables:
        raise PulseError(f"{path} is a recipe; give its {', '.join(tables)} table(s) in the file itself or with --set.")
    return _open_recipe(path if path.exists() else find_recipe(source), overrides)


def _seed_weights_path(path: Path) -> Path:
    """`RUN/model.pt` (the original PULSE spelling of a run's weights) means RUN, when there is no such file."""
    if path.name in SEED_WEIGHTS and not path.exists() and path.parent.is_dir() and (
            is_run(path.parent) or (path.parent / WEIGHTS).is_file()):
        return path.parent
    return path


def _open_recipe(path: Path, overrides: tuple[str, ...]) -> Source:
    data = read_table(path)
    described = str(path) + (f" (with --set {' '.join(overrides)})" if overrides else "")
    recipe = validate(resolve(data, overrides), source=described)
    return Source(recipe=recipe, origin="recipe", location=path, overrides=overrides)


def _open_directory(path: Path, overrides: tuple[str, ...], tables: Mapping[str, Any] | None,
                    allow_unverified: bool) -> Source:
    run = is_run(path)
    export = hf_dir.read_export(path, WHAT_TO_GIVE, pulse_dir=run or (path / RECIPE).is_file())
    if export is not None:  # a `pulse export --format hf` directory: the recipe from config.json
        config, stored, weights = export
        source = _from_stored(stored, path, weights, "hf", overrides, tables, allow_unverified, None, [])
        source.hf_config = config
        return source
    candidates = newest_weights(path) if run else ([(None, path)] if (path / WEIGHTS).is_file() else [])
    if not candidates:
        if run:
            stored = marked_recipe(path)
            if stored is None:
                raise PulseError(f"{path} holds files of a run whose recipe cannot be verified (run.json is missing "
                                 f"or altered, and there are no weights); {WHAT_TO_GIVE}.")
            return _from_stored(stored, path, None, "run", overrides, tables, allow_unverified, None, [])
        raise PulseError(f"{path} has no {WEIGHTS}, so it is neither a checkpoint nor a run directory; "
                         f"{WHAT_TO_GIVE}.")
    notes: list[str] = []
    for i, (step, folder) in enumerate(candidates):
        try:
            stored = read_stored_recipe(folder / WEIGHTS, allow_unverified=allow_unverified)
        except Unverified:
            raise
        except PulseError as err:  # damaged weights: an older checkpoint of the run may still be whole
            if i == len(candidates) - 1 or not run:
                raise
            notes.append(f"skipped the damaged checkpoint {folder}: {err}")
            continue
        _check_readable_copy(folder, stored)
        return _from_stored(stored, path, folder / WEIGHTS, "run" if run else "checkpoint", overrides, tables,
                            allow_unverified, step, notes)
    raise AssertionError("unreachable: the last candidate returns or raises")


def _open_stored(weights: Path, location: Path, origin: str, overrides: tuple[str, ...],
                 tables: Mapping[str, Any] | None, allow_unverified: bool, *, step: int | None) -> Source:
    stored = read_stored_recipe(weights, allow_unverified=allow_unverified)
    _check_readable_copy(weights.parent, stored)
    return _from_stored(stored, location, weights, origin, overrides, tables, allow_unverified, step, [])


def _from_stored(stored: dict[str, Any], location: Path, weights: Path | None, origin: str,
                 overrides: tuple[str, ...], tables: Mapping[str, Any] | None, allow_unverified: bool,
                 step: int | None, notes: list[str]) -> Source:
    described = f"{weights or location / 'run.json'} (stored recipe)"
    model_sets = [o for o in overrides if o.partition("=")[0].strip().split(".")[0] == "model"]
    if model_sets or (tables and "model" in tables):
        raise PulseError(f"{described}: --set {model_sets[0] if model_sets else 'of [model]'} cannot apply here: the "
                         "stored weights fix the model's architecture. Drop it, or start from a recipe "
                         "(`pulse cp` a card, or the run's recipe.json) to build a different model.")
    # a stored recipe is resolved already: a `from` in it was put there by hand, and is not followed
    check_stored_paths({"model": stored.get("model")}, source=str(weights or location))
    data = as_stored({**stored, **dict(tables or {})})  # fields added since: what the recipe meant when stored
    if overrides:
        described += f" (with --set {' '.join(overrides)})"
    recipe = recipe_from_dict(data, overrides, source=described)
    return Source(recipe=recipe, origin=origin, location=location, weights=weights, step=step, stored=stored,
                  overrides=overrides, typed=tuple(tables or ()), allow_unverified=allow_unverified, notes=notes)


def _check_readable_copy(folder: Path, stored: dict[str, Any]) -> None:
    """recipe.json beside the weights is there for people; an edited copy would mislead them, so it must match."""
    import json

    readable = folder / RECIPE
    if not readable.is_file():
        return
    try:
        shown = json.loads(readable.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        shown = None
    if shown != stored:
        raise PulseError(f"{readable} does not match the recipe stored (with its hash) in {folder / WEIGHTS}; it was "
                         "edited or damaged. Restore it (the stored recipe is the truth: `pulse summarize` reads it), "
                         "or train a recipe file and change settings with --set.")
