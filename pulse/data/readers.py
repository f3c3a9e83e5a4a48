"""Corpus readers: which files a [task] of kind text names, and the documents in them, streamed.

One document is one text file, one JSON line, one Parquet row or one row of a dataset saved
by Hugging Face `datasets` (`save_to_disk`). Documents come out in a fixed order (files
sorted by path, rows in file order) and are numbered in that order, so the split by
document and the cache key are the same on every machine. A document is held in memory
on its own; the corpus never is.

Parquet and saved datasets need the `data` extra (`pip install "pulse[data]"`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulse.errors import PulseError

SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__"}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
DATASET_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
EXTRA = 'pip install "pulse[data]"'
SAMPLE = 1 << 20  # bytes hashed from each end of every source file: the cache key's content check
KEY_COVERS = ("each source's path, size and modification time and a sha256 of its first and last MiB; the "
              "tokenizer, the reading settings, the split and the format version (an edit of a file over 2 MiB "
              "that keeps its size and modification time and lies between its ends is not seen: remove the "
              "entry to prepare it again)")
SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
           (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class CorpusFile:
    """One file (or saved dataset folder) of the corpus, and how to read it."""

    path: Path
    format: str  # text | jsonl | parquet | dataset

    def identity(self) -> dict[str, Any]:
        """Path, size, modification time and a hash of each file's first and last MiB: what the cache key is
        made of (a changed file changes it, a same-size edit near either end too, whatever its mtime)."""
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        stats = [p.stat() for p in files]
        sample = hashlib.sha256()
        for p, s in zip(files, stats, strict=True):
            sample.update(f"{p.relative_to(self.path) if p != self.path else ''}\0{s.st_size}\0".encode())
            sample.update(_ends(p, s.st_size))
        return {"path": str(self.path), "format": self.format, "size": sum(s.st_size for s in stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0), "files": len(files),
                "ends_sha256": sample.hexdigest()}


def _ends(path: Path, size: int) -> bytes:
    """The first and last SAMPLE bytes of a file (all of it when shorter than two of them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SAMPLE)
            if size > SAMPLE:
                f.seek(max(SAMPLE, size - SAMPLE))
                head += f.read(SAMPLE)
            return head
    except OSError as err:
        raise PulseError(f"cannot read corpus file {path}: {err.strerror or err}.") from None


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_name(spec: Any) -> str:
    """A short name for the corpus (cache folder, tables): the path's last part, or `stdlib`."""
    if spec.path is None:
        return "stdlib"
    name = Path(spec.path).expanduser().name or "corpus"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "corpus"


def describe(spec: Any) -> str:
    return f"the Python standard library's sources ({stdlib_root()})" if spec.path is None else str(spec.path)


def _format_of(path: Path, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if path.is_dir():
        return "dataset"
    return SUFFIXES.get(path.suffix.lower(), "text")


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in DATASET_MARKERS)


def corpus_files(spec: Any) -> list[CorpusFile]:
    """The corpus's files, sorted, each with its format; a PulseError when there are none."""
    if spec.path is None:
        files = []
        for folder, subdirs, names in os.walk(stdlib_root()):
            subdirs[:] = [d for d in subdirs if d not in SKIP_PARTS]
            files += [Path(folder) / n for n in names if n.endswith(".py")]
        return [CorpusFile(p, "text") for p in sorted(files)]
    root = Path(spec.path).expanduser()
    _check_kind(root, spec.path)
    if spec.format == "dataset" or (spec.format == "auto" and _is_dataset(root)):
        if not root.is_dir():
            raise PulseError(f"task.path `{spec.path}` is not a folder, so it is no dataset saved by `datasets` "
                             "(save_to_disk writes a folder); give that folder, or another task.format.")
        return [CorpusFile(root, "dataset")]
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = [p for p in root.glob(spec.pattern) if p.is_file()]
    elif glob.has_magic(spec.path):
        files = [Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file()]
    else:
        raise PulseError(f"task.path `{spec.path}` does not exist; give a file, a directory, a glob, or a folder "
                         "saved by `datasets`.")
    if not files:
        raise PulseError(f"task.path `{spec.path}` (pattern `{spec.pattern}`) matches no files; check the path and "
                         "pattern.")
    return [CorpusFile(p, _format_of(p, spec.format)) for p in sorted(files)]


def _check_kind(root: Path, given: str) -> None:
    """A PulseError when `root` exists but is no regular file or folder (a FIFO, /dev/zero: no size, maybe no end),
    or cannot be looked at; nothing when it does not exist (it may be a glob)."""
    try:
        mode = root.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        raise PulseError(f"task.path `{given}` cannot be read ({err.strerror or err}); give a file or folder this "
                         "user may read.") from None
    for test, what in SPECIAL:
        if test(mode):
            raise PulseError(f"task.path `{given}` is {what}, not a regular file or a folder; PULSE reads a corpus "
                             "only from those (a stream has no size to split or cache by, and may never end): "
                             "write the text to a file and give its path.")


def count_documents(file: CorpusFile, spec: Any) -> int:
    """How many documents `file` holds (cheap: one per text file, lines, Parquet metadata, dataset length)."""
    if file.format == "text":
        return 1
    if file.format == "jsonl":
        count = 0
        with _open(file.path) as f:
            for line in f:
                count += bool(line.strip())
        return count
    if file.format == "parquet":
        return _parquet(file.path).metadata.num_rows
    return sum(part.num_rows for part in _dataset_parts(file.path, spec.text_field))


def documents(file: CorpusFile, spec: Any) -> Iterator[bytes | str]:
    """The documents of `file`, in order: raw bytes for text files (the caller checks UTF-8), str otherwise."""
    if file.format == "text":
        try:
            yield file.path.read_bytes()
        except OSError as err:
            raise PulseError(f"cannot read corpus file {file.path}: {err.strerror or err}.") from None
    elif file.format == "jsonl":
        yield from _jsonl(file.path, spec.text_field)
    elif file.format == "parquet":
        yield from _parquet_rows(file.path, spec.text_field)
    else:
        row = 0
        for part in _dataset_parts(file.path, spec.text_field):
            with _damaged(file.path, "saved dataset", lambda: row):
                for batch in part.iter(batch_size=1024):
                    for text in batch[spec.text_field]:
                        yield _text_or_fail(text, f"{file.path} (column `{spec.text_field}`)", row)
                        row += 1


@contextmanager
def _damaged(path: Path, what: str, row: Callable[[], int]) -> Iterator[None]:
    """A library's error while reading rows (a damaged page, a truncated file) as one PulseError at that row."""
    try:
        yield
    except PulseError:
        raise
    except Exception as err:  # noqa: BLE001 (pyarrow and datasets raise their own types)
        raise PulseError(f"{path}: the {what} cannot be read past row {row()} ({str(err)[:160]}); it is damaged or "
                         "truncated: write it again.") from None


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """The file, read in binary; an OSError while it is open (not only opening it) is a PulseError naming it."""
    try:
        with open(path, "rb") as f:
            yield f
    except OSError as err:
        raise PulseError(f"cannot read corpus file {path}: {err.strerror or err}.") from None


def _jsonl(path: Path, field: str) -> Iterator[bytes | str]:
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8-sig")
            except UnicodeDecodeError:
                yield line  # not UTF-8: handed on as bytes, for the caller's invalid_utf8 policy
                continue
            record = _json_line(text, f"{path}:{number}")
            if not isinstance(record, dict) or field not in record:
                keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
                raise PulseError(f"{path}:{number}: no field `{field}` (the line has {keys}); set task.text_field to "
                                 "the field that holds the text.")
            value = _text_or_fail(record[field], f"{path}:{number}", None)
            if "\\u" in text:  # only an escape can make a lone surrogate, which no UTF-8 text holds
                _no_surrogate(value, f"{path}:{number}")
            yield value


def _json_line(text: str, where: str) -> Any:
    """One line's JSON value, or a PulseError at `where` for anything Python's parser refuses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PulseError(f"{where}: not a JSON line ({err.msg} at column {err.colno}); every non-blank line of a "
                         ".jsonl file must be one JSON object.") from None
    except RecursionError:
        raise PulseError(f"{where}: nested too deeply to read (more than about {sys.getrecursionlimit():,} levels "
                         "of [ or {); no text is nested so: fix or remove the line.") from None
    except ValueError as err:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise PulseError(f"{where}: holds a number too long to read ({str(err).split(';')[0]}); write it as a string "
                         "or remove the line.") from None


def _no_surrogate(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise PulseError(f"{where}: the text holds a lone surrogate, \\u{ord(value[err.start]):04x} at character "
                         f"{err.start}, which is half of a character and cannot be UTF-8; write the character "
                         "itself (or both halves of its pair), or remove the line.") from None


def _text_or_fail(value: Any, where: str, row: int | None) -> str:
    if not isinstance(value, str):
        at = f" row {row}" if row is not None else ""
        held = "null (no value)" if value is None else type(value).__name__
        raise PulseError(f"{where}{at}: the text field holds {held}, not text; point task.text_field at a text "
                         "column, or remove the empty rows.")
    return value


def _parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PulseError(f"{path}: reading Parquet needs the `data` extra ({EXTRA}).") from None
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 (pyarrow raises its own types)
        raise PulseError(f"{path}: not a Parquet file pyarrow can read ({str(err)[:160]}).") from None


def _parquet_rows(path: Path, field: str) -> Iterator[str]:
    pf = _parquet(path)
    if field not in pf.schema_arrow.names:
        raise PulseError(f"{path}: no column `{field}` (columns: {', '.join(pf.schema_arrow.names[:12])}); set "
                         "task.text_field to the column that holds the text.")
    row = 0
    with _damaged(path, "Parquet file", lambda: row):
        for batch in pf.iter_batches(columns=[field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                yield _text_or_fail(text, f"{path} (column `{field}`)", row)
                row += 1


def _dataset_parts(path: Path, field: str) -> list:
    """The splits of a saved dataset (a DatasetDict's in name order), each checked for the text column."""
    try:
        import datasets
    except ImportError:
        raise PulseError(f"{path}: reading a saved dataset needs the `data` extra ({EXTRA}).") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 (datasets raises its own types)
        raise PulseError(f"{path}: not a dataset saved by `datasets` ({str(err)[:160]}); give the folder "
                         "save_to_disk wrote, or set task.format.") from None
    parts = [loaded[k] for k in sorted(loaded)] if isinstance(loaded, datasets.DatasetDict) else [loaded]
    for part in parts:
        if field not in part.column_names:
            raise PulseError(f"{path}: no column `{field}` (columns: {', '.join(part.column_names[:12])}); set "
                             "task.text_field to the column that holds the text.")
    return parts
