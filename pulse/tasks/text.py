"""Byte-level language modelling over local text, reported in bits per byte.

The corpus is a file, every file under a directory (matching `pattern`), or a glob;
with no path it is the Python standard library's own source tree on this machine
(`sysconfig.get_paths()["stdlib"]`, its .py files, no site-packages), so it needs no
download. Files go to train or validation by a seeded hash of their path — no file
is in both. A single file is split by position instead (its tail is validation).
Examples are consecutive windows of seq_len + 1 bytes; the model predicts each next
byte, and the loss in nats divided by ln 2 is bits per byte.

# b batch · t time (bytes) · v vocabulary (256)
"""

from __future__ import annotations

import glob
import hashlib
import math
import sysconfig
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulse.errors import PulseError
from pulse.specs.tasks import TextSpec
from pulse.tasks.base import Batch, IndexedTask, Sums, bits_per_byte
from pulse.tasks.io import require_token_model

SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(spec: TextSpec) -> tuple[Path, list[Path]]:
    """(root, files) of the corpus, files sorted so the corpus is the same on every run."""
    if spec.path is None:
        root = stdlib_root()
        files = [p for p in root.rglob("*.py") if not SKIP_PARTS & set(p.relative_to(root).parts)]
    else:
        root = Path(spec.path).expanduser()
        if root.is_file():
            return root.parent, [root]
        if root.is_dir():
            files = [p for p in root.glob(spec.pattern) if p.is_file()]
        elif glob.has_magic(spec.path):
            files = [Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file()]
            parts = root.parts
            fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            root = Path(*parts[:fixed]) if fixed else Path(".")
        else:
            raise PulseError(f"task.path `{spec.path}` does not exist; give a file, a directory or a glob of text files.")
    files = sorted(files)
    if not files:
        raise PulseError(f"task.path `{spec.path or root}` (pattern `{spec.pattern}`) matches no files; check the path and pattern.")
    return root, files


def _is_validation(name: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def load_corpus(spec: TextSpec) -> tuple[np.ndarray, np.ndarray]:
    """(train bytes, validation bytes) as uint8 arrays."""
    root, files = corpus_files(spec)

    def read(paths: list[Path], cap: int | None = None) -> np.ndarray:
        chunks, total = [], 0
        for p in paths:
            try:
                data = p.read_bytes()
            except OSError as err:
                raise PulseError(f"cannot read corpus file {p}: {err}.") from None
            chunks.append(data)
            total += len(data)
            if cap is not None and total >= cap:
                break
        out = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        return out[:cap] if cap is not None else out

    if len(files) == 1:
        data = read(files)
        cut = int(len(data) * (1 - spec.val_fraction))
        train, val = data[:cut], data[cut:]
        if spec.max_bytes is not None:
            train = train[: spec.max_bytes]
    else:
        names = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in files]
        held = [_is_validation(n, spec.seed, spec.val_fraction) for n in names]
        if all(held) or not any(held):
            # too few files for the fraction: hold out the last one so both splits exist
            held = [i == len(files) - 1 for i in range(len(files))]
        train = read([p for p, h in zip(files, held) if not h], spec.max_bytes)
        val = read([p for p, h in zip(files, held) if h])
    for name, part in (("training", train), ("validation", val)):
        if len(part) < spec.seq_len + 1:
            raise PulseError(
                f"the {name} split of the corpus has {len(part)} bytes, fewer than seq_len + 1 = {spec.seq_len + 1}; "
                "use more text, a smaller task.seq_len, or a different task.val_fraction."
            )
    return train, val


class Text(IndexedTask):
    """Next-byte prediction; bits per byte on held-out files."""

    kind = "text"
    metric = "bpb"
    higher_is_better = False

    def __init__(self, spec: TextSpec):
        self.spec = spec
        self._data: tuple[np.ndarray, np.ndarray] | None = None

    def _split(self, split: str) -> np.ndarray:
        if self._data is None:
            self._data = load_corpus(self.spec)
        return self._data[0] if split == "train" else self._data[1]

    def _windows(self, split: str) -> int:
        return (len(self._split(split)) - 1) // self.spec.seq_len

    def size(self, split: str) -> int:
        n = self._windows(split)
        return n if split == "train" else min(n, self.spec.eval_windows)

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        data, t = self._split(split), self.spec.seq_len
        if split == "test":
            # evaluation windows are spread evenly over the whole validation text
            indices = indices * self._windows(split) // self.size(split)
        starts = indices * t
        windows = torch.from_numpy(np.stack([data[s : s + t + 1] for s in starts]).astype(np.int64))  # (b, t+1)
        return {"ids": windows[:, :-1], "labels": windows[:, 1:]}

    def targets(self, batch: Batch) -> int:
        return batch["labels"].numel()

    def check_model(self, model: nn.Module) -> None:
        require_token_model(model, self.kind, 256)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        h, _ = model.features(batch["ids"])
        logits = model.head(h).float()  # (b, t, v)
        labels = batch["labels"]
        count = torch.tensor(float(labels.numel()), device=labels.device)
        return {"loss_sum": F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"), "count": count}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["count"], 1.0)
        return {"loss": loss, "bpb": bits_per_byte(loss), "perplexity": math.exp(min(loss, 50.0))}
