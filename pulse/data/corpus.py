"""Tokenize once: a corpus becomes two memory-mapped token files and a manifest, reused until it changes.

    <cache>/<name>-<key>/
      train.bin        the training documents' ids, each followed by the tokenizer's eos (uint16 or uint32, by
                       the largest id the tokenizer can emit)
      val.bin          the held-out documents' ids, the same way
      manifest.json    sources (path, size, mtime, hash of the first and last MiB), tokenizer digest, split,
                       counts, sha256 of each .bin, version

The key hashes what the files hold: the sources' identities, the reading settings, the
tokenizer's digest, the split and the format version. A changed source or tokenizer is a
new key, so it is prepared afresh (and the stale entry of the same corpus is removed); a
truncated or corrupt file fails its size or checksum and is rebuilt. An entry is written in
a temporary folder and renamed into place whole, so two processes preparing one corpus never
corrupt it: the second rename finds the first's entry and uses it.

The split is by document: a seeded permutation holds out round(val_fraction · documents)
of them (at least one each side). A corpus of one document is split by position instead
(the tail of its tokens is held out), and the manifest says so. Documents stream through
the tokenizer in batches; only one batch is ever in memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pulse.data.readers import KEY_COVERS, CorpusFile, corpus_files, corpus_name, count_documents, describe, documents
from pulse.errors import PulseError

VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
BATCH_DOCS = 256  # documents per call to the tokenizer (its own threads share them out) ...
BATCH_BYTES = 1 << 20  # ... or fewer: ~1 MB of text holds ~150 MB of encodings at most
Progress = Callable[[dict[str, Any]], None]


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


def _unwritable(folder: Path, spec: Any, err: OSError) -> PulseError:
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


def sources(spec: Any) -> list[CorpusFile]:
    """The corpus's files less any inside the token cache (a cache kept under task.path is not text: read, it
    would change the key and be tokenized into the next entry on every run)."""
    cache = cache_root(spec).absolute()
    return [f for f in corpus_files(spec) if not f.path.absolute().is_relative_to(cache)]


def corpus_key(spec: Any, tokenizer: Any, files: list[CorpusFile]) -> tuple[str, dict[str, Any]]:
    """(key, what it hashes): the identity of the token files this corpus and tokenizer give."""
    settings = {"version": VERSION, "tokenizer": tokenizer.digest(), "vocab_size": tokenizer.vocab_size,
                "eos": tokenizer.eos_id, "text_field": spec.text_field, "invalid_utf8": spec.invalid_utf8,
                "val_fraction": spec.val_fraction, "seed": spec.seed, "max_bytes": spec.max_bytes,
                "sources": [f.identity() for f in files]}
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), settings


def open_corpus(spec: Any, tokenizer: Any, *, progress: Progress | None = None,
                say: Callable[[str], None] | None = None, prepare: bool = True) -> Corpus:
    """The prepared corpus of `spec` under `tokenizer`: reused when its entry is whole, else prepared now."""
    files = sources(spec)
    key, settings = corpus_key(spec, tokenizer, files)
    root = cache_root(spec) / f"{corpus_name(spec)}-{key[:16]}"
    problem = check_entry(root, key)
    if problem is None:
        return _load(root, reused=True)
    if not prepare:
        raise PulseError(f"the corpus {describe(spec)} is not prepared for this tokenizer ({problem}); run "
                         "`pulse data prepare RECIPE` (or `pulse train`, which prepares it).")
    if root.exists() and say is not None:
        say(f"the cached corpus {root} is {problem}; preparing it again")
    build(spec, tokenizer, files, key, settings, root, progress)
    _remove_stale(root, settings)
    return _load(root, reused=False)


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


def _load(root: Path, *, reused: bool) -> Corpus:
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    dtype = np.dtype(manifest["dtype"])
    arrays = {}
    for split in SPLITS:
        path = root / f"{split}.bin"
        arrays[split] = (np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size
                         else np.zeros(0, dtype=dtype))
    return Corpus(root=root, manifest=manifest, train=arrays["train"], val=arrays["val"], reused=reused)


class _Writer:
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


def _held_out(total: int, spec: Any) -> np.ndarray | None:
    """A boolean mask over the documents, true where held out; None for a one-document corpus (split by position)."""
    if total < 2:
        return None
    k = min(max(round(spec.val_fraction * total), 1), total - 1)
    mask = np.zeros(total, dtype=bool)
    mask[np.random.default_rng(spec.seed).permutation(total)[:k]] = True
    return mask


def training_documents(spec: Any) -> Iterator[bytes | str]:
    """The documents of the training split, as a prepare would split them (for a tokenizer learned on them alone);
    a one-document corpus gives its first (1 − val_fraction) of bytes."""
    files = sources(spec)
    total = sum(count_documents(f, spec) for f in files)
    mask = _held_out(total, spec)
    index = 0
    for file in files:
        for doc in documents(file, spec):
            if mask is None:
                yield _head(doc, 1 - spec.val_fraction)
            elif not mask[index]:
                yield doc
            index += 1


def _head(doc: bytes | str, share: float) -> bytes | str:
    """The first `share` of a document, cut at a character boundary (a cut UTF-8 character would make the whole
    head undecodable, and a tokenizer learned from it would skip it)."""
    cut = int(len(doc) * share)
    while isinstance(doc, bytes) and 0 < cut < len(doc) and doc[cut] & 0xC0 == 0x80:
        cut -= 1
    return doc[:cut]


def build(spec: Any, tokenizer: Any, files: list[CorpusFile], key: str, settings: dict[str, Any], root: Path,
          progress: Progress | None = None) -> None:
    """Tokenize the corpus into a temporary folder beside `root`, then rename it into place."""
    tmp = root.parent / f".{root.name}.{os.getpid()}.tmp"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise _unwritable(root.parent, spec, err) from None
    try:
        manifest = _tokenize(spec, tokenizer, files, tmp, progress)
        manifest.update(key=key, version=VERSION, settings=settings, corpus=describe(spec),
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if root.exists():  # a damaged entry: move it out of the way first
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if check_entry(root, key) is not None:  # not another process's whole entry: a real failure
                raise
    except OSError as err:  # reading errors are PulseErrors already: this is the cache (full disk, gone folder)
        raise _unwritable(root.parent, spec, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _batches(files: list[CorpusFile], spec: Any, tokenizer: Any, mask: np.ndarray | None,
             state: dict[str, Any]) -> Iterator[list[tuple[bytes | str, str, int]]]:
    """The documents as (document, split, UTF-8 size), in batches of BATCH_DOCS or BATCH_BYTES."""
    batch: list[tuple[bytes | str, str, int]] = []
    index, held, train_bytes = 0, 0, 0
    for file in files:
        for doc in documents(file, spec):
            split = "val" if mask is not None and mask[index] else "train"
            index += 1
            state["documents"] += 1
            doc, size = _checked_utf8(doc, file, spec, tokenizer)
            if doc is None:
                state["skipped"] += 1
                continue
            if split == "train" and spec.max_bytes is not None and train_bytes >= spec.max_bytes:
                continue
            train_bytes += size if split == "train" else 0
            state["text_bytes"] += size
            batch.append((doc, split, size))
            held += size
            if len(batch) >= BATCH_DOCS or held >= BATCH_BYTES:
                yield batch
                batch, held = [], 0
    if batch:
        yield batch


def _tokenize(spec: Any, tokenizer: Any, files: list[CorpusFile], out: Path, progress: Progress | None) -> dict:
    total = sum(count_documents(f, spec) for f in files)
    if total == 0:
        raise PulseError(f"the corpus {describe(spec)} holds no documents; give files with text in them.")
    mask = _held_out(total, spec)
    dtype = dtype_for(tokenizer.vocab_size - 1)  # its largest id (HFTokenizer: the vocabulary's largest + 1)
    writers = {s: _Writer(out / f"{s}.bin", dtype) for s in SPLITS}
    eos = np.asarray([tokenizer.eos_id] if tokenizer.eos_id is not None else [], dtype=np.int64)
    state = {"documents": 0, "text_bytes": 0, "skipped": 0, "total": total}

    def write(encoded: Future, batch: list[tuple[bytes | str, str, int]]) -> None:
        for ids, (_, split, size) in zip(encoded.result(), batch, strict=True):
            writer = writers[split]
            writer.write(ids)
            writer.write(eos)
            writer.documents += 1
            writer.text_bytes += size
        if progress is not None:
            progress(dict(state))

    # one batch is encoded (the tokenizer's own threads, without the GIL) while the one before is written
    with ThreadPoolExecutor(max_workers=1) as pool:
        previous = None
        for batch in _batches(files, spec, tokenizer, mask, state):
            encoded = pool.submit(tokenizer.encode_documents, [doc for doc, _, _ in batch])
            if previous is not None:
                write(*previous)
            previous = (encoded, batch)
        if previous is not None:
            write(*previous)
    stats = {s: w.close() for s, w in writers.items()}
    if mask is None:
        stats = _split_by_position(out, stats, spec, dtype)
    for split, what in (("train", "training"), ("val", "validation")):
        if stats[split]["tokens"] < spec.seq_len + 1:
            raise PulseError(
                f"the {what} split of {describe(spec)} has {stats[split]['tokens']} tokens, fewer than seq_len + 1 = "
                f"{spec.seq_len + 1} ({stats['train']['documents']} + {stats['val']['documents']} documents, "
                f"{state['skipped']} skipped as not UTF-8); use more text, a smaller task.seq_len, or another "
                "task.val_fraction."
            )
    return {"files": stats, "documents": total, "skipped_invalid_utf8": state["skipped"], "dtype": dtype.name,
            "split": "position" if mask is None else "documents", "tokenizer": tokenizer.digest(),
            "vocab_size": tokenizer.vocab_size, "eos": tokenizer.eos_id}


def _checked_utf8(doc: bytes | str, file: CorpusFile, spec: Any, tokenizer: Any) -> tuple[bytes | str | None, int]:
    """The document ready for the tokenizer and its UTF-8 size, or (None, 0) to skip one that is not UTF-8."""
    if isinstance(doc, str):
        return doc, len(doc.encode("utf-8"))
    try:
        text = doc.decode("utf-8")
    except UnicodeDecodeError as err:
        if spec.invalid_utf8 == "refuse":
            raise PulseError(
                f"{file.path}: not UTF-8 (byte {err.start}: {err.reason}); convert it, or set "
                "task.invalid_utf8 = \"skip\" (the default) to skip such documents and count them."
            ) from None
        return None, 0
    return (doc if tokenizer.name == "bytes" else text), len(doc)


def _split_by_position(out: Path, stats: dict[str, dict], spec: Any, dtype: np.dtype) -> dict[str, dict]:
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


def _remove_stale(root: Path, settings: dict[str, Any]) -> None:
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


def inspect_corpus(spec: Any, tokenizer: Any) -> dict[str, Any]:
    """What `pulse data inspect` shows: sizes from the manifest when the cache is fresh, else from the sources."""
    files = sources(spec)
    key, _ = corpus_key(spec, tokenizer, files)
    root = cache_root(spec) / f"{corpus_name(spec)}-{key[:16]}"
    problem = check_entry(root, key)
    out: dict[str, Any] = {"corpus": describe(spec), "files": len(files), "cache": str(root),
                           "cache_state": "fresh" if problem is None else problem, "key_covers": KEY_COVERS,
                           "tokenizer": tokenizer.digest(), "vocab_size": tokenizer.vocab_size}
    if problem is not None:
        out["documents"] = sum(count_documents(f, spec) for f in files)
        out["source_bytes"] = sum(f.identity()["size"] for f in files)
        return out
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    stats = manifest["files"]
    text = [stats[s]["text_bytes"] for s in SPLITS]
    tokens = sum(stats[s]["tokens"] for s in SPLITS)
    out.update(documents=manifest["documents"], skipped_invalid_utf8=manifest["skipped_invalid_utf8"],
               split=manifest["split"], dtype=manifest["dtype"],
               **{f"{s}_documents": stats[s]["documents"] for s in SPLITS},
               **{f"{s}_tokens": stats[s]["tokens"] for s in SPLITS},
               **{f"{s}_text_bytes": stats[s]["text_bytes"] for s in SPLITS})
    if None not in text and tokens:
        out["text_bytes"] = sum(text)
        out["bytes_per_token"] = sum(text) / tokens
    return out


def progress_lines(say: Callable[[str], None], every: float = 10.0) -> Progress:
    """A Progress that says a line (documents, MB/s, ETA) at most every `every` seconds: for `pulse train`."""
    started = time.perf_counter()
    last = [started]

    def report(state: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - last[0] < every:
            return
        last[0] = now
        rate = state["documents"] / max(now - started, 1e-9)
        eta = (state["total"] - state["documents"]) / max(rate, 1e-9)
        say(f"tokenizing the corpus: {state['documents']:,}/{state['total']:,} documents, "
            f"{state['text_bytes'] / 1e6 / (now - started):.1f} MB/s, ETA {eta:.0f} s")

    return report
