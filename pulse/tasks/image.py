"""LRA Image (Tay et al., 2020): 10-way classification of a 32×32 grey-scale image read as one
sequence of 1,024 pixel ids, row-major (vocabulary 256: the grey level).

Source, `path`: CIFAR-10's **binary** version (cifar-10-binary.tar.gz, unpacked to
cifar-10-batches-bin/: data_batch_1.bin … data_batch_5.bin train, test_batch.bin test). Each record
is 1 label byte then 3,072 bytes: the 1,024 red, 1,024 green and 1,024 blue pixels, row-major.
Grey = round(0.299 R + 0.587 G + 0.114 B), the ITU-R BT.601 luma weights that LRA's
`rgb_to_grayscale` uses, computed exactly in integers and rounded half up to 0..255. `path` may
be that folder, a folder holding it, or one batch file (then its last `num_test` records, by
default a tenth, are the test split). The pickled Python version (cifar-10-batches-py/) is
refused, never unpickled. Files are memory-mapped; a record is converted when it is drawn.

Without `path`: generated 32×32 images of ten simple shapes (`SHAPES`) at a random position and
size, ink brighter by 96..159 grey levels than a random dark background (0..95), and Gaussian
pixel noise, each from its own (seed, split, index) stream — the task runs anywhere, with
nothing to download.

# b batch · t time (1,024 pixels) · v vocabulary (256)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NoReturn

import numpy as np

from pulse.errors import PulseError
from pulse.specs.tasks import LraImageSpec
from pulse.tasks.base import rng_for
from pulse.tasks.classify import SequenceClassification

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE  # label byte + R, G, B planes
WEIGHTS = np.array([299, 587, 114], dtype=np.int32)  # per mille; they sum to 1000
SHAPES = ("disc", "square", "triangle", "ring", "cross", "horizontal bars", "vertical bars", "diagonal stripes",
          "checkerboard", "dot grid")
GENERATED = {"train": 10_000, "test": 1_000}  # generated examples when num_train / num_test are omitted


class PixelClassification(SequenceClassification):
    """A grey-scale image as a row-major sequence of pixel ids 0..255 (this task and Pathfinder); generated
    examples are cached as bytes, an eighth of their int64 ids."""

    vocab_size = 256

    def _example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        if not self.cache_examples:
            return self.encoded(split, index)
        key = (split, index)
        if key not in self._cache:
            ids, label = self.encoded(split, index)
            self._cache[key] = (ids.astype(np.uint8), label)
        pixels, label = self._cache[key]
        return pixels.astype(np.int64), label


def grey(records: np.ndarray) -> np.ndarray:
    """(n, 3073) CIFAR-10 records → (n, 1024) uint8 grey pixels, round(0.299 R + 0.587 G + 0.114 B)."""
    planes = records[:, 1:].reshape(-1, 3, SIDE * SIDE).astype(np.int32)
    return ((np.einsum("c,ncp->np", WEIGHTS, planes) + 500) // 1000).astype(np.uint8)


def _refuse_pickle(file: Path) -> NoReturn:
    raise PulseError(
        f"{file} is CIFAR-10's pickled Python version, which PULSE never unpickles (loading a pickle can run "
        "code); download the binary version, cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "unpack it and set task.path to its cifar-10-batches-bin folder."
    )


def _records(file: Path) -> np.ndarray:
    """A batch file as a read-only (n, 3073) uint8 memory map, checked."""
    size = file.stat().st_size
    if size:
        with open(file, "rb") as f:
            if f.read(1) == b"\x80":  # a pickle's protocol byte; a binary record starts with a label 0-9
                _refuse_pickle(file)
    if size == 0 or size % RECORD:
        raise PulseError(
            f"{file} has {size} bytes, not a whole number of CIFAR-10 binary records of {RECORD} bytes (1 label + "
            f"3×1024 pixels); point task.path at an unpacked cifar-10-binary.tar.gz (cifar-10-batches-bin)."
        )
    records = np.memmap(file, dtype=np.uint8, mode="r").reshape(-1, RECORD)
    labels = np.asarray(records[:, 0])
    if labels.max() > 9:
        at = int(np.argmax(labels > 9))
        raise PulseError(
            f"{file}: record {at} has label byte {labels[at]}, but CIFAR-10 labels are 0-9; this is not a CIFAR-10 "
            "binary batch (CIFAR-100's binary version has two label bytes and is not supported)."
        )
    return records


def _numbered_batches(folder: Path) -> list[Path]:
    """data_batch_<n>.bin files of a folder, by n."""
    found = ((re.fullmatch(r"data_batch_(\d+)\.bin", f.name), f) for f in folder.iterdir() if f.is_file())
    return [f for _, f in sorted((int(m.group(1)), f) for m, f in found if m)]


def cifar_files(path: Path) -> tuple[list[Path], list[Path]]:
    """The train and test batch files of a CIFAR-10 binary folder; PulseError saying what is missing."""
    if (path / "cifar-10-batches-bin").is_dir():
        path = path / "cifar-10-batches-bin"
    train = _numbered_batches(path)
    test = path / "test_batch.bin"
    if train and test.is_file():
        return train, [test]
    for pickled in (path / "cifar-10-batches-py" / "data_batch_1", path / "data_batch_1", path / "test_batch"):
        if pickled.is_file():
            _refuse_pickle(pickled)
    missing = "test_batch.bin" if train else "data_batch_1.bin … data_batch_5.bin" + ("" if test.is_file() else
                                                                                      " and test_batch.bin")
    raise PulseError(
        f"task.path {path} is a folder without CIFAR-10 binary batches (missing {missing}); set task.path to the "
        "cifar-10-batches-bin folder unpacked from cifar-10-binary.tar.gz, or omit it for generated shapes."
    )


def shape_image(rng: np.random.Generator, label: int, noise: float) -> np.ndarray:
    """A 32×32 uint8 image of shape class `label` (`SHAPES[label]`)."""
    size = int(rng.integers(12, 25))
    y0, x0 = (int(v) for v in rng.integers(0, SIDE - size + 1, 2))
    period = int(rng.integers(3, 6))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    py, px = yy - y0, xx - x0  # pixel offsets inside the box
    cy, cx = (py + 0.5) / size - 0.5, (px + 0.5) / size - 0.5  # box centre 0, edges ±0.5
    inside = (py >= 0) & (py < size) & (px >= 0) & (px < size)
    r = np.hypot(cy, cx)
    mask = [
        r < 0.5,
        (np.abs(cy) < 0.4) & (np.abs(cx) < 0.4),
        (cy < 0.45) & (np.abs(cx) < (cy + 0.45) * 0.55),
        (r < 0.5) & (r > 0.3),
        (np.abs(cy) < 0.12) | (np.abs(cx) < 0.12),
        py % period < period / 2,
        px % period < period / 2,
        (py + px) % period < period / 2,
        (py // (period - 1) + px // (period - 1)) % 2 == 0,
        (py % period < 2) & (px % period < 2) if period > 3 else (py % period == 1) & (px % period == 1),
    ][label] & inside
    background = int(rng.integers(0, 96))
    ink = background + int(rng.integers(96, 160))  # brighter by 96..159
    image = np.where(mask, ink, background) + rng.normal(0.0, noise, (SIDE, SIDE))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class LraImage(PixelClassification):
    """CIFAR-10 in grey (or generated shapes) as 1,024-pixel sequences; accuracy of the class."""

    kind = "lra_image"
    num_classes = 10

    def __init__(self, spec: LraImageSpec):
        super().__init__(spec)
        self._splits: dict[str, tuple[list[np.ndarray], np.ndarray]] | None = None
        if spec.path is not None:
            self.cache_examples = False  # a record is read and converted on demand
            self._splits = self._load(Path(spec.path).expanduser())

    def _load(self, path: Path) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
        if path.is_dir():
            train_files, test_files = cifar_files(path)
            train = [_records(f) for f in train_files]
            test = [_records(f) for f in test_files]
        elif path.is_file():
            records = _records(path)
            held = self.spec.num_test or max(1, len(records) // 10)
            if held >= len(records):
                raise PulseError(
                    f"{path} has {len(records)} records, too few to hold out task.num_test = {held} and train on the "
                    "rest; lower task.num_test or point task.path at the whole cifar-10-batches-bin folder."
                )
            train, test = [records[:-held]], [records[-held:]]
        else:
            raise PulseError(f"task.path {path} does not exist; set it to the unpacked cifar-10-batches-bin folder "
                             "of cifar-10-binary.tar.gz, or omit it for generated shapes.")
        out = {}
        for split, parts, cap in (("train", train, self.spec.num_train), ("test", test, self.spec.num_test)):
            have = sum(len(p) for p in parts)
            if cap is not None and cap > have:
                raise PulseError(f"task.num_{split} = {cap} exceeds the {have} {split} records under {path}; "
                                 f"lower it or omit it to use them all.")
            out[split] = (parts, np.cumsum([0, *(len(p) for p in parts)])[:-1])
        return out

    def size(self, split: str) -> int:
        cap = self.spec.num_train if split == "train" else self.spec.num_test
        if self._splits is None:
            return cap or GENERATED[split]
        parts, _ = self._splits[split]
        have = sum(len(p) for p in parts)
        return have if cap is None else min(cap, have)

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        if self._splits is None:
            label = index % self.num_classes  # balanced classes
            image = shape_image(rng_for(self.spec.seed, split, index), label, self.spec.noise)
            return image.reshape(-1).astype(np.int64), label
        parts, starts = self._splits[split]
        part = int(np.searchsorted(starts, index, side="right")) - 1
        record = np.asarray(parts[part][index - starts[part]])[None]
        return grey(record)[0].astype(np.int64), int(record[0, 0])
