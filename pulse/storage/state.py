"""Training state without pickle: the optimiser, the RNG streams, the step, in one safetensors file.

`train_state.safetensors` holds every tensor (Adam moments and steps, the RNG byte
states) under opaque names, and everything else as JSON in its metadata:

    metadata = {"format": "pulse-train-state", "version": "2",
                "state": JSON with {"__tensor__": name} where a tensor was,
                "pulse_sha256": sha256 over the tensors and the JSON text}

Nothing in it is executable: reading it parses JSON and copies bytes, so a damaged or
hostile file can only fail the checksum (a PulseError) — never run code. The
optimiser state is keyed by *parameter name*, so a resumed run may regroup the
parameters (changed no_decay) and takes its hyperparameters (lr, betas, weight decay,
eps) from the recipe it is resumed with, never from the file.

Also here: a verified step checkpoint read into memory (`read_point`, `ResumePoint`),
the metrics log (metrics.jsonl) and seeding.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.paths import atomic_write, atomic_write_text
from pulse.storage.checkpoint import (
    WEIGHTS,
    fit_tensors,
    read_metadata,
    read_stored_recipe,
    read_tensors,
    recipe_hash,
    stack_weight_name,
    tensors_digest,
)
from pulse.storage.runfiles import HEAD, LEGACY_STATE, STATE

FORMAT = "pulse-train-state"
VERSION = "2"


def rng_state() -> dict[str, Any]:
    """Every global random stream: torch (CPU and CUDA), Python, NumPy."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, Any]:
    """Per-parameter optimiser state by parameter name (`names`: id(param) → name)."""
    return {names[id(p)]: dict(optimizer.state[p]) for g in optimizer.param_groups for p in g["params"]
            if optimizer.state.get(p)}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], saved: dict[str, Any],
                         where: Path) -> None:
    """Put saved per-parameter state back; the groups' hyperparameters stay those the optimiser was built with."""
    order = [p for g in optimizer.param_groups for p in g["params"]]
    known = {names[id(p)] for p in order}
    saved = {stack_weight_name(n, known): v for n, v in saved.items()}  # names from before the stack was a child
    unknown = sorted(set(saved) - known)
    if unknown:
        raise PulseError(f"{where}: optimiser state for parameters this model does not have ({unknown[:4]}); "
                         "the checkpoint comes from a different model.")
    state = {i: saved[names[id(p)]] for i, p in enumerate(order) if names[id(p)] in saved}
    # the current param_groups (built from the recipe being run) win over anything stored
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def scheduler_at(scheduler: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Move a freshly built LambdaLR to `step` steps done: lr = base_lr · factor(step), as after `step` calls."""
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    scheduler.load_state_dict({**scheduler.state_dict(), "last_epoch": step, "_step_count": step + 1, "_last_lr": lrs})
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def _encode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """A JSON-able form of `obj`; each tensor goes into `tensors` and leaves a reference behind."""
    if isinstance(obj, Tensor):
        name = f"t{len(tensors):06d}"
        tensors[name] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in the training state")


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"__tensor__"}:
        return tensors[obj["__tensor__"]]
    if set(obj) == {"__float__"}:
        return float(obj["__float__"])
    if set(obj) == {"__tuple__"}:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if set(obj) == {"__items__"}:
        return {_key(_decode(k, tensors)): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _digest(tensors: dict[str, Tensor], text: str) -> str:
    return hashlib.sha256((tensors_digest(tensors) + text).encode()).hexdigest()


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the training state atomically as safetensors (tensors) + JSON metadata (the rest)."""
    tensors: dict[str, Tensor] = {}
    text = json.dumps(_encode(state, tensors), sort_keys=True, allow_nan=False)
    metadata = {"format": FORMAT, "version": VERSION, "state": text, "pulse_sha256": _digest(tensors, text)}
    data = save_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_state(path: Path) -> dict[str, Any]:
    """Read and verify a training-state file. Any damage is a PulseError naming the file and the damage."""
    if not path.is_file():
        legacy = path.with_name(LEGACY_STATE)
        if legacy.is_file():
            raise PulseError(f"{legacy}: training state in the old pickle format, which is no longer read "
                             "(it could run code); start this run afresh with --force.")
        raise PulseError(f"{path}: missing.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise PulseError(f"{path}: not a PULSE training-state file (format {metadata.get('format')!r}).")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PulseError(f"{path}: cannot read the training state (damaged file?): {str(err)[:200]}.") from None
    if metadata.get("version") != VERSION:
        raise PulseError(f"{path}: training-state version {metadata.get('version')!r}, expected {VERSION}.")
    text = metadata.get("state", "")
    if metadata.get("pulse_sha256") != _digest(tensors, text):
        raise PulseError(f"{path}: damaged — the training state does not match its checksum.")
    try:
        state = _decode(json.loads(text), tensors)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise PulseError(f"{path}: damaged training state ({err}).") from None
    if not isinstance(state, dict):
        raise PulseError(f"{path}: damaged training state (not a table).")
    return state


def param_names(module: nn.Module) -> dict[int, str]:
    """id(parameter) → its first name in `module` (a tied parameter is named once)."""
    return {id(p): name for name, p in module.named_parameters()}


@dataclass
class ResumePoint:
    """A whole, verified checkpoint read into memory, ready to be put into freshly built objects."""

    step: int
    path: Path
    recipe: dict[str, Any]
    state: dict[str, Any]
    model_tensors: dict[str, Tensor]
    head_tensors: dict[str, Tensor] | None

    @property
    def tokens(self) -> int:
        return int(self.state["tokens"])

    @property
    def elapsed(self) -> float:
        return float(self.state["elapsed"])

    def apply(self, *, model: nn.Module, head: nn.Module | None, module: nn.Module, optimizer: Any,
              scheduler: Any) -> None:
        """Weights, per-parameter optimiser state, the schedule position and the RNG streams; hyperparameters stay."""
        fit_tensors(model, self.model_tensors, self.path / WEIGHTS)
        if head is not None:
            if self.head_tensors is None:
                raise PulseError(
                    f"{self.path} has no {HEAD}, but this task trains a head; it is not this run's checkpoint."
                )
            fit_tensors(head, self.head_tensors, self.path / HEAD)
        load_optimizer_state(optimizer, param_names(module), self.state["optimizer"], self.path)
        scheduler_at(scheduler, optimizer, self.step)
        set_rng_state(self.state["rng"])


def read_point(step: int, path: Path) -> ResumePoint:
    """Read and cross-check one step checkpoint: state file, weights, recipe hash, step."""
    state = load_state(path / STATE)
    if state.get("step") != step or not isinstance(state.get("optimizer"), dict) or "rng" not in state:
        raise PulseError(f"{path / STATE}: its training state is for step {state.get('step')!r}, not {step}.")
    recipe = read_stored_recipe(path / WEIGHTS)
    if state.get("recipe_hash") != recipe_hash(recipe):
        raise PulseError(f"{path}: the training state and the weights belong to different recipes.")
    if state.get("weights_sha256") != read_metadata(path / WEIGHTS).get("pulse_sha256"):
        raise PulseError(f"{path}: the weights are not the ones this training state was saved with.")
    model_tensors = read_tensors(path / WEIGHTS)
    head_tensors = read_tensors(path / HEAD) if (path / HEAD).exists() else None
    return ResumePoint(step=step, path=path, recipe=recipe, state=state, model_tensors=model_tensors,
                       head_tensors=head_tensors)


class MetricsLog:
    """metrics.jsonl: appended and flushed line by line, cut back to the resumed step on resume."""

    def __init__(self, path: Path, *, writer: bool = True):
        self.path = path
        self.writer = writer

    def restart(self, step: int) -> None:
        """Keep the whole records up to `step` (all of them are redone after it)."""
        if not self.writer:
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step] if step > 0 else []
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_text(self.path, text)

    def write(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The whole JSON records of a metrics file (a line cut short by a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records

