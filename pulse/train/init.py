"""Fine-tuning: start a run from another run's (or checkpoint's) weights — `[train] init_from`.

The weights must fit the new recipe's model exactly (same names, same shapes); a
mismatch is one PulseError that names every tensor that differs, is missing or is
unexpected. The weights are read with the checkpoint's integrity checks (header,
length, recipe hash, tensor checksum). The task head is loaded when the source has
one that fits, and otherwise starts fresh (a new task). Where the run started —
file, the source recipe's hash, the weights' checksum, step — is written to
RUN/init_from.json and copied into summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from pulse.api.source import open_source
from pulse.errors import PulseError
from pulse.paths import atomic_write_text
from pulse.storage.checkpoint import WEIGHTS, _read_header, load_weights, read_metadata, stack_weight_name
from pulse.storage.runfiles import HEAD, INIT_RECORD


def init_source(location: str | Path, *, allow_unverified: bool = False) -> tuple[Path, int | None]:
    """The weights file to start from and its step: a run's newest weights (final, or a step checkpoint
    when the run stopped early), or a checkpoint directory or .safetensors file given directly."""
    try:
        source = open_source(location, allow_unverified=allow_unverified)
        return source.require_weights("fine-tuning"), source.step
    except PulseError as err:
        raise PulseError(f"train.init_from = {str(location)!r}: {err}") from None


def check_tokenizer(folder: Path, tokenizer: Any) -> None:
    """Refuse to continue weights saved with another tokenizer than the task's (their ids mean other things)."""
    recorded = read_metadata(folder / WEIGHTS).get("pulse_tokenizer")
    if recorded is not None and tokenizer is not None and recorded != tokenizer.digest():
        raise PulseError(f"{folder}: its weights were trained with another tokenizer ({recorded[:20]}…) than "
                         f"task.tokenizer gives ({tokenizer.digest()[:20]}…); their ids mean other things. Point "
                         "task.tokenizer at the run's own tokenizer.json, or train into a new --out.")


def fit_report(module: nn.Module, path: Path) -> list[str]:
    """Every way the tensors in `path` fail to fit `module` (tied names count once); [] when they fit."""
    header, _ = _read_header(path)
    expected = module.state_dict(keep_vars=True)
    # names saved before the models held their stack as a child are read as they are named now
    found = {stack_weight_name(name, expected): tuple(entry.get("shape", ())) for name, entry in header.items()}
    groups: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        groups.setdefault(id(tensor), []).append(name)
    problems = []
    for names in groups.values():
        present = [n for n in names if n in found]
        want = tuple(expected[names[0]].shape)
        if not present:
            problems.append(f"{names[0]}: missing from the checkpoint (the recipe expects shape {want})")
        elif found[present[0]] != want:
            problems.append(f"{present[0]}: the recipe expects shape {want}, the checkpoint has {found[present[0]]}")
    problems += [f"{n}: unexpected in the checkpoint (shape {found[n]}; not in this recipe's model)"
                 for n in sorted(set(found) - set(expected))]
    return problems


def init_weights(model: nn.Module, head: nn.Module | None, location: str | Path, *, say=None,
                 allow_unverified: bool = False, tokenizer: Any = None) -> dict[str, Any]:
    """Load the weights at `location` into `model` (and `head` when the source has one that fits); weights
    trained with another tokenizer than `tokenizer` are refused."""
    path, step = init_source(location, allow_unverified=allow_unverified)
    check_tokenizer(path.parent, tokenizer)
    problems = fit_report(model, path)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise PulseError(
            f"train.init_from = {str(location)!r}: the weights in {path} do not fit this recipe's model "
            f"({len(problems)} tensor(s)):\n{lines}\nMake [model] match the checkpoint's architecture "
            f"(its recipe is in {path.parent / 'recipe.json'}; `pulse summarize {path.parent}` prints it), "
            "or drop train.init_from to train from scratch."
        )
    load_weights(model, path, allow_unverified=allow_unverified)
    head_path = path.parent / HEAD
    head_loaded = False
    if head is not None and head_path.is_file():
        if fit_report(head, head_path):
            if say is not None:
                say(f"the task head in {head_path} does not fit this task, so the head starts fresh")
        else:
            load_weights(head, head_path, allow_unverified=allow_unverified)
            head_loaded = True
    _, metadata = _read_header(path)
    return {"from": str(location), "weights": str(path), "step": step, "head": head_loaded,
            "recipe_hash": metadata.get("pulse_recipe_hash"), "weights_sha256": metadata.get("pulse_sha256")}


def write_record(run_root: Path, record: dict[str, Any]) -> None:
    atomic_write_text(run_root / INIT_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_record(run_root: Path) -> dict[str, Any] | None:
    path = run_root / INIT_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
