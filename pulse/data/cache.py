"""The token cache's on-disk format: one folder per (corpus, tokenizer, settings), written whole or not at all.

    <cache>/<name>-<key>/
      train.bin        the training documents' ids, each followed by the tokenizer's eos (uint16 or uint32, by
                       the largest id the tokenizer can emit)
      val.bin          the held-out documents' ids, the same way
      manifest.json    sources (path, size, mtime, hash of the first and last MiB), tokenizer digest, split,
                       counts, sha256 of each .bin, version

The key (pulse.data.corpus.corpus_key) hashes what the files hold: the sources' identities, the
reading settings, the tokenizer's digest, the split and the format version. A changed source or
tokenizer is a new key, so it is prepared afresh (and the stale entry of the same corpus is removed,
`remove_stale`); a truncated or corrupt file fails its size or checksum (`check_entry`) and is
rebuilt. An entry is written in a temporary folder and renamed into place whole (`write_entry`), so
two processes preparing one corpus never corrupt it: the second rename finds the first's entry and
uses it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pulse.errors import PulseError

VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


def cache_root(spec: Any) -> Path:
    if spec.cache_dir:
        return Path(spec.cache_dir).expanduser()
    return Path(os.environ.get("PULSE_CACHE") or Path.home() / ".cache" / "pulse").expanduser() / "corpora"


def cache_setting(spec: Any) -> str:
    """The setting that chose cache_root(spec), to name in an error."""
    if spec.cache_dir:
        return f"task.cache_dir (now `{spec.cache_dir}`)"
    if os.environ.get("PULSE_CACHE"):
        return f"PULSE_CACHE (now `{os.environ['PULSE_CACHE']}`) or task.cache_dir"
    return "PULSE_CACHE or task.cache_dir"


def unwritable(folder: Path, spec: Any, err: OSError) -> PulseError:
    """A cache folder that cannot be written, as one error saying which setting to change."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        why = f"{blocker} is a file, not a folder"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"{err.filename or folder} is read-only ({err.strerror})"
    else:
        why = f"{err.strerror or err} ({err.filename or folder})"
    return PulseError(f"cannot write the token cache in {folder}: {why}; set {cache_setting(spec)} to a folder "
                      "this user can write.")


def dtype_for(largest: int) -> np.dtype:
    """The narrowest unsigned integer that holds ids up to `largest`; a PulseError past uint32."""
    for dtype in (np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise PulseError(f"the tokenizer's largest id, {largest:,}, does not fit the token cache's widest integer "
                     "(uint32); use a tokenizer with fewer ids.")


@dataclass
class Corpus:
    """A prepared corpus: the token files mapped read-only, and what the manifest says of them."""

    root: Path
    manifest: dict[str, Any]
    train: np.ndarray
    val: np.ndarray
    reused: bool

    @property
    def fresh_note(self) -> str:
        return "reused" if self.reused else "prepared"


def check_entry(root: Path, key: str) -> str | None:
    """None when the entry at `root` is whole and of `key`; else what is wrong with it."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):
        return "damaged (its manifest does not read)"
    if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("version") != VERSION:
        return "of another corpus, tokenizer or format version"
    for split in SPLITS:
        entry = manifest.get("files", {}).get(split, {})
        path = root / f"{split}.bin"
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return f"truncated ({split}.bin is not the size its manifest records)"
        if _sha256(path) != entry.get("sha256"):
            return f"corrupt ({split}.bin does not match its checksum)"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def load_entry(root: Path, *, reused: bool) -> Corpus:
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    dtype = np.dtype(manifest["dtype"])
    arrays = {}
    for split in SPLITS:
        path = root / f"{split}.bin"
        arrays[split] = (np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size
                         else np.zeros(0, dtype=dtype))
    return Corpus(root=root, manifest=manifest, train=arrays["train"], val=arrays["val"], reused=reused)


class Writer:
    """Appends ids to one split's file, counting tokens and hashing as it goes."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.file = open(path, "wb")
        self.hash = hashlib.sha256()
        self.tokens = 0
        self.documents = 0
        self.text_bytes = 0

    def write(self, ids: np.ndarray) -> None:
        if len(ids) and (ids.min() < 0 or ids.max() > np.iinfo(self.dtype).max):
            bad = int(ids.max() if ids.max() > np.iinfo(self.dtype).max else ids.min())
            raise PulseError(f"the tokenizer emitted id {bad:,}, outside the {self.dtype.name} the cache chose from "
                             "its vocabulary; its vocabulary does not list every id it emits: fix the tokenizer.")
        data = ids.astype(self.dtype, copy=False).tobytes()
        self.file.write(data)
        self.hash.update(data)
        self.tokens += len(ids)

    def close(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"tokens": self.tokens, "bytes": self.path.stat().st_size, "sha256": self.hash.hexdigest(),
                "documents": self.documents, "text_bytes": self.text_bytes}


def write_entry(root: Path, key: str, settings: dict[str, Any], spec: Any,
                fill: Callable[[Path], dict[str, Any]]) -> None:
    """The entry `root` of `key`: `fill` writes the token files into a temporary folder beside it and returns what
    the manifest says of them; the manifest is written, then the folder renamed into place."""
    tmp = root.parent / f".{root.name}.{os.getpid()}.tmp"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise unwritable(root.parent, spec, err) from None
    try:
        manifest = fill(tmp)
        manifest.update(key=key, version=VERSION, settings=settings, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if root.exists():  # a damaged entry: move it out of the way first
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if check_entry(root, key) is not None:  # not another process's whole entry: a real failure
                raise
    except OSError as err:  # reading errors are PulseErrors already: this is the cache (full disk, gone folder)
        raise unwritable(root.parent, spec, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def split_by_position(out: Path, stats: dict[str, dict], spec: Any, dtype: np.dtype) -> dict[str, dict]:
    """One document: its first (1 − val_fraction) of tokens train, the rest are held out."""
    train = np.fromfile(out / "train.bin", dtype=dtype)
    cut = int(len(train) * (1 - spec.val_fraction))
    result = {}
    for split, part in (("train", train[:cut]), ("val", train[cut:])):
        data = part.tobytes()
        (out / f"{split}.bin").write_bytes(data)
        result[split] = {"tokens": len(part), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                         "documents": 1, "text_bytes": None}
    return result


def remove_stale(root: Path, settings: dict[str, Any]) -> None:
    """Entries of the same corpus and settings whose sources have since changed: superseded by `root`."""
    same = {k: v for k, v in settings.items() if k != "sources"}
    paths = [s["path"] for s in settings["sources"]]
    for other in root.parent.glob(f"{root.name.rsplit('-', 1)[0]}-*"):
        if other == root or not other.is_dir():
            continue
        try:
            theirs = json.loads((other / MANIFEST).read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if {k: v for k, v in theirs.items() if k != "sources"} == same and \
                [s["path"] for s in theirs.get("sources", [])] == paths:
            shutil.rmtree(other, ignore_errors=True)
