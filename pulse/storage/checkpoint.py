"""Checkpoints: safetensors weights with the resolved recipe in the metadata.

A checkpoint directory holds `model.safetensors` (weights; metadata: recipe JSON,
recipe hash, library version, a sha256 of the tensor data) and `recipe.json` (the
same recipe, for people). The file alone rebuilds the model. Every write goes to a
temporary file first and is renamed into place, so a run killed at any moment
leaves the previous good file intact.

Reading checks the file before trusting it — header length, header JSON, that the
data is all there, the recipe's hash, the tensors' checksum, every name and shape —
and reports what is wrong as a PulseError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Container
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.paths import atomic_write, atomic_write_text
from pulse.specs.recipe import recipe_hash
from pulse.version import __version__

WEIGHTS = "model.safetensors"
RECIPE = "recipe.json"
MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
ADVICE = "give a checkpoint directory written by `pulse build --out`, `pulse train` or save_pretrained"
INTEGRITY = {"pulse_sha256": "the checksum of its tensors", "pulse_recipe_hash": "the hash of its recipe"}


def unique_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with each shared (tied) tensor once, under its first name, contiguous on the CPU."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    storages: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.device.type == "meta":
            raise PulseError(
                f"cannot save `{name}`: the model lives on the meta device and has no values; "
                "build it on a real device."
            )
        t = tensor.detach().to("cpu").contiguous()
        # safetensors refuses distinct tensors that share memory (views of one another): give those their own copy
        if t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(model: nn.Module, recipe: Any, directory: str | Path, *, name: str = WEIGHTS,
                    tokenizer: Any = None) -> Path:
    """Save weights (+ recipe metadata) into `directory` atomically; returns the weights path.

    With a `tokenizer`, its digest goes into the metadata and its files (a tokenizer.json;
    the byte tokenizer has none) beside the weights, so the checkpoint decodes on its own.
    """

    directory = Path(directory)
    recipe_dict = recipe.to_dict()
    tensors = unique_tensors(model)
    metadata = {
        "format": "pt",
        "pulse_recipe": json.dumps(recipe_dict, sort_keys=True),
        "pulse_recipe_hash": recipe.hash(),
        "pulse_version": __version__,
        "pulse_sha256": tensors_digest(tensors),
    }
    if tokenizer is not None:
        metadata["pulse_tokenizer"] = tokenizer.digest()
        tokenizer.save(directory)
    path = directory / name
    data = safetensors_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    atomic_write_text(directory / RECIPE, json.dumps(recipe_dict, indent=2, sort_keys=True) + "\n")
    return path


def weights_path(location: str | Path) -> Path:
    location = Path(location)
    if location.is_dir():
        path = location / WEIGHTS
        if not path.is_file():
            raise PulseError(f"{location} has no {WEIGHTS}, so it is not a checkpoint directory; {ADVICE}.")
        return path
    if not location.exists():
        raise PulseError(f"{location}: no such file or directory; {ADVICE}.")
    return location


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse and check a safetensors header: (tensor entries, metadata). Raises PulseError."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
            if len(head) < 9:
                raise PulseError(
                    f"{path}: only {size} bytes, too short to be a safetensors checkpoint (truncated?); {ADVICE}."
                )
            (length,) = struct.unpack("<Q", head[:8])
            if head[8:] != b"{" or not 2 <= length <= MAX_HEADER:
                raise PulseError(f"{path}: not a safetensors file (no valid header at the start); {ADVICE}.")
            if 8 + length > size:
                raise PulseError(
                    f"{path}: truncated — the header alone needs {8 + length:,} bytes but the file has {size:,}; "
                    "the write was cut short, so use an earlier checkpoint."
                )
            body = head[8:] + f.read(length - 1)
    except OSError as err:
        raise PulseError(f"{path}: cannot read the file ({err.strerror or err}).") from None
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PulseError(
            f"{path}: corrupt header (not valid JSON: {err}); the file is damaged, use another copy."
        ) from None
    if not isinstance(header, dict):
        raise PulseError(f"{path}: corrupt header (expected a JSON object); the file is damaged, use another copy.")
    metadata = header.pop("__metadata__", None) or {}
    ends = []
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise PulseError(f"{path}: corrupt header (entry `{name}` has no valid data_offsets); the file is damaged.")
        ends.append(offsets[1])
    have, need = size - 8 - length, max(ends, default=0)
    if have < need:
        raise PulseError(
            f"{path}: truncated — the tensors need {need:,} bytes of data but only {have:,} are there; "
            "the write was cut short, so use an earlier checkpoint."
        )
    if have > need:
        raise PulseError(
            f"{path}: corrupt — {have - need:,} unexplained bytes after the tensor data; the file is damaged."
        )
    if not isinstance(metadata, dict) or "pulse_recipe" not in metadata:
        raise PulseError(
            f"{path}: a safetensors file, but not a PULSE checkpoint (no recipe in its metadata); {ADVICE}."
        )
    return header, metadata


class Unverified(PulseError):
    """A checkpoint that lacks its checksum or recipe hash, read without allow_unverified."""


def require_integrity(path: Path, metadata: dict[str, str], key: str, allow_unverified: bool) -> bool:
    """True when `key` is present; a PulseError when it is missing and unverified files are not allowed."""
    if metadata.get(key) is not None:
        return True
    if allow_unverified:
        return False
    raise Unverified(
        f"{path}: no `{key}` in its metadata ({INTEGRITY[key]}), so the file cannot be verified and may have "
        "been altered. If you trust it, load it with allow_unverified=True (CLI: --allow-unverified)."
    )


def read_metadata(location: str | Path) -> dict[str, str]:
    """The checkpoint's metadata (recipe JSON, hashes, version) after checking the file's structure."""
    return _read_header(weights_path(location))[1]


def read_stored_recipe(location: str | Path, *, allow_unverified: bool = False) -> dict[str, Any]:
    """The recipe dict stored in a checkpoint, checked against its stored hash (not yet validated)."""
    path = weights_path(location)
    meta = read_metadata(path)
    require_integrity(path, meta, "pulse_recipe_hash", allow_unverified)
    try:
        data = json.loads(meta["pulse_recipe"])
    except json.JSONDecodeError as err:
        raise PulseError(f"{path}: corrupt metadata — the stored recipe is not valid JSON ({err}).") from None
    stored = meta.get("pulse_recipe_hash")
    if not isinstance(data, dict) or (stored is not None and recipe_hash(data) != stored):
        raise PulseError(f"{path}: corrupt metadata — the stored recipe does not match its hash; the file was altered.")
    return data


def _read_tensors(path: Path, metadata: dict[str, str], allow_unverified: bool = False) -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PulseError(f"{path}: cannot read the tensors (corrupt file?): {err}.") from None
    digest = metadata.get("pulse_sha256")
    if require_integrity(path, metadata, "pulse_sha256", allow_unverified) and tensors_digest(tensors) != digest:
        raise PulseError(
            f"{path}: corrupt — the tensor data does not match its checksum; use another copy of the checkpoint."
        )
    return tensors


def read_tensors(location: str | Path, *, allow_unverified: bool = False) -> dict[str, Tensor]:
    """A checkpoint's tensors after checking its structure, its recipe hash and its checksum."""
    path = weights_path(location)
    _, metadata = _read_header(path)
    read_stored_recipe(path, allow_unverified=allow_unverified)
    return _read_tensors(path, metadata, allow_unverified)


def load_weights(model: nn.Module, location: str | Path, *, allow_unverified: bool = False) -> None:
    """Load weights into `model`, strictly: a missing, extra or misshapen tensor is a PulseError.

    A file without its checksum or recipe hash, or holding NaN or inf, is refused unless allow_unverified=True.
    """
    path = weights_path(location)
    tensors = read_tensors(path, allow_unverified=allow_unverified)
    check_values(tensors, path, allow_unverified)
    fit_tensors(model, tensors, path)


def check_values(tensors: dict[str, Tensor], path: Path, allow_unverified: bool = False) -> None:
    """Refuse weights holding NaN or inf (a diverged run's, or an altered file) unless allow_unverified."""
    bad = [(n, int((~torch.isfinite(t)).sum())) for n, t in tensors.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad and not allow_unverified:
        shown = ", ".join(f"{n} ({k:,} values)" for n, k in bad[:4])
        raise PulseError(f"{path}: {len(bad)} tensor(s) hold NaN or inf: {shown}; the run had diverged when they were "
                         "saved, or the file was altered. Use an earlier checkpoint (a run directory's "
                         "checkpoints/), or pass --allow-unverified (allow_unverified=True) to load them anyway.")


# the names a model's stack weights had when the models inherited the stack (checkpoints saved before)
BEFORE_COMPOSITION = ("positions.", "layers.", "final_norm.")


def stack_weight_name(name: str, known: Container[str]) -> str:
    """A weight name saved before the models held their stack as a child (`layers.0.…`, or `model.layers.0.…`
    under a training or Transformers wrapper) as it is named now (`stack.layers.0.…`) when that name is one of
    `known`; any other name as it is."""
    if name in known:
        return name
    for prefix in ("", "model."):
        rest = name[len(prefix):]
        if name.startswith(prefix) and rest.startswith(BEFORE_COMPOSITION) and f"{prefix}stack.{rest}" in known:
            return f"{prefix}stack.{rest}"
    return name


def fit_tensors(model: nn.Module, tensors: dict[str, Tensor], path: Path) -> None:
    """Load already-read `tensors` into `model` strictly (names, tied groups, shapes); a dtype that differs from
    the model's is converted, and said (a PulseWarning)."""
    groups: dict[int, list[str]] = {}
    expected = model.state_dict(keep_vars=True)
    tensors = {stack_weight_name(n, expected): t for n, t in tensors.items()}  # saved before the stack was a child
    for name, tensor in expected.items():
        groups.setdefault(id(tensor), []).append(name)
    state: dict[str, Tensor] = {}
    missing = []
    for names in groups.values():
        present = [n for n in names if n in tensors]
        if not present:
            missing.append(names[0])
            continue
        for n in names:
            state[n] = tensors[present[0]]
    unexpected = sorted(set(tensors) - set(expected))
    misshapen = [
        f"{n}: file {tuple(state[n].shape)}, model {tuple(expected[n].shape)}"
        for n in expected if n in state and state[n].shape != expected[n].shape
    ]
    if missing or unexpected or misshapen:
        parts = [f"{len(misshapen)} shape mismatch(es) ({'; '.join(misshapen[:4])})" if misshapen else "",
                 f"missing {missing[:4]}" if missing else "", f"unexpected {unexpected[:4]}" if unexpected else ""]
        raise PulseError(
            f"{path}: weights do not fit this model — {', '.join(p for p in parts if p)}; "
            "the checkpoint comes from a different recipe, so build the model from the checkpoint's own recipe."
        )
    converted = sorted({f"{state[n].dtype} → {expected[n].dtype}" for n in state
                        if state[n].is_floating_point() and state[n].dtype != expected[n].dtype})
    if converted:
        import warnings

        from pulse.errors import PulseWarning

        warnings.warn(f"{path}: the weights are stored as {', '.join(converted)}; converted to the model's dtype.",
                      PulseWarning, stacklevel=2)
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
