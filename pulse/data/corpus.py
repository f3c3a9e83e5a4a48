"""Tokenize once: a corpus walked document by document through the tokenizer into the token cache
(pulse.data.cache: two memory-mapped token files and a manifest, reused until the corpus changes).

The split is by document: a seeded permutation holds out round(val_fraction · documents)
of them (at least one each side). A corpus of one document is split by position instead
(the tail of its tokens is held out), and the manifest says so. Documents stream through
the tokenizer in batches; only one batch is ever in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pulse.data.cache import (
    MANIFEST,
    SPLITS,
    VERSION,
    Corpus,
    Writer,
    cache_root,
    check_entry,
    dtype_for,
    load_entry,
    remove_stale,
    split_by_position,
    write_entry,
)
from pulse.data.readers import KEY_COVERS, CorpusFile, corpus_files, corpus_name, count_documents, describe, documents
from pulse.errors import PulseError

BATCH_DOCS = 256  # documents per call to the tokenizer (its own threads share them out) ...
BATCH_BYTES = 1 << 20  # ... or fewer: ~1 MB of text holds ~150 MB of encodings at most
Progress = Callable[[dict[str, Any]], None]


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
        return load_entry(root, reused=True)
    if not prepare:
        raise PulseError(f"the corpus {describe(spec)} is not prepared for this tokenizer ({problem}); run "
                         "`pulse data prepare RECIPE` (or `pulse train`, which prepares it).")
    if root.exists() and say is not None:
        say(f"the cached corpus {root} is {problem}; preparing it again")
    write_entry(root, key, settings, spec, lambda tmp: _tokenize(spec, tokenizer, files, tmp, progress))
    remove_stale(root, settings)
    return load_entry(root, reused=False)


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
    writers = {s: Writer(out / f"{s}.bin", dtype) for s in SPLITS}
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
        stats = split_by_position(out, stats, spec, dtype)
    for split, what in (("train", "training"), ("val", "validation")):
        if stats[split]["tokens"] < spec.seq_len + 1:
            raise PulseError(
                f"the {what} split of {describe(spec)} has {stats[split]['tokens']} tokens, fewer than seq_len + 1 = "
                f"{spec.seq_len + 1} ({stats['train']['documents']} + {stats['val']['documents']} documents, "
                f"{state['skipped']} skipped as not UTF-8); use more text, a smaller task.seq_len, or another "
                "task.val_fraction."
            )
    return {"files": stats, "documents": total, "skipped_invalid_utf8": state["skipped"], "dtype": dtype.name,
            "split": "position" if mask is None else "documents", "corpus": describe(spec),
            "tokenizer": tokenizer.digest(), "vocab_size": tokenizer.vocab_size, "eos": tokenizer.eos_id}


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
