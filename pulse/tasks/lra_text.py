"""LRA Text (Tay et al., 2021, on IMDb reviews of Maas et al., 2011): classify a document
from its bytes.

LRA's Text task reads each review byte by byte — no tokenizer, so a model must compose
words from characters — truncated to 4,000 bytes, and asks for its sentiment (2 classes).
Here `path` is a local folder in one of these layouts (nothing is downloaded):

    aclImdb/{train,test}/{neg,pos}/*.txt   IMDb as distributed: neg = 0, pos = 1; unsup/ and
                                           the .feat/.vocab/urls files are ignored
    folder/{train,test}/<label>/…          any labelled text, split as given
    folder/<label>/…                       any labelled text, split here: task.test_fraction of
                                           each label's documents held out, seeded, by document

Labels are the sorted names of the label folders (at least 2; train and test must have the
same ones); the documents are the files matching task.pattern in each. Ids are the bytes
0..255 (vocab 256; any bytes, UTF-8 or not) of each file's first max_len bytes. Everything
is read once, at first use, into one byte array per split with offsets (IMDb's 50,000
reviews are ~65 MB), so examples are sliced, not cached. `eval_examples` scores a subset
spread evenly over the test split (a quick check on a CPU; LRA reports the whole of it).

A model answers as every `SequenceClassification` does (pulse/tasks/classify.py).

# b batch · t time (bytes)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pulse.errors import PulseError
from pulse.specs.tasks import LraTextSpec
from pulse.tasks.classify import SequenceClassification

SPLITS = ("train", "test")
IMDB_LABELS = ("neg", "pos")
SPLIT_STREAM = 2  # the seeded split draws from [seed, 2], apart from rng_for's train (0) and test (1) streams
LAYOUTS = ("IMDb's aclImdb/ (train/ and test/, each with neg/ and pos/ of *.txt), or any folder of labelled text: "
           "one subfolder of documents per label, optionally under train/ and test/")


class ByteDocuments:
    """Documents as one uint8 array with offsets: document i is data[offsets[i] : offsets[i + 1]]."""

    def __init__(self, docs: list[bytes]):
        self.data = np.frombuffer(b"".join(docs), dtype=np.uint8)
        self.offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in docs], out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        """The ids of document `index`; an empty document reads as one byte 0, so every row has a real step."""
        ids = self.data[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)
        return ids if len(ids) else np.zeros(1, dtype=np.int64)


def spread(n: int, k: int | None) -> np.ndarray:
    """k indices spread evenly over 0 … n−1 (all n of them when k is None or at least n)."""
    return np.arange(n) if k is None or k >= n else np.arange(k) * n // k


def read_head(path: Path, max_len: int) -> bytes:
    """The first max_len bytes of a file."""
    try:
        with open(path, "rb") as f:
            return f.read(max_len)
    except OSError as err:
        raise PulseError(f"cannot read document {path}: {err.strerror or err}; fix its permissions or remove it.") \
            from None


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _documents(folder: Path, spec: LraTextSpec) -> list[Path]:
    files = sorted(p for p in folder.glob(spec.pattern) if p.is_file())
    if not files:
        raise PulseError(
            f"task.path `{spec.path}`: the label folder {folder} holds no files matching task.pattern "
            f"`{spec.pattern}`; put that label's documents there, remove the folder, or change task.pattern."
        )
    return files


def _need_two(labels: list[str], folder: Path, spec: LraTextSpec) -> None:
    if len(labels) >= 2:
        return
    found = f"a single label folder `{labels[0]}`" if labels else "no label folders"
    raise PulseError(
        f"task.path `{spec.path}`: {folder} has {found}, and classification needs at least two. task.path must be "
        f"{LAYOUTS}. If it is the folder above aclImdb/, point task.path at aclImdb/ itself."
    )


def scan(spec: LraTextSpec) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The labels, and each split's (document file, label index) pairs, of the folder task.path."""
    root = Path(spec.path).expanduser()
    if not root.exists():
        raise PulseError(f"task.path `{spec.path}` does not exist; set task.path (--set task.path=…) to {LAYOUTS}.")
    if not root.is_dir():
        raise PulseError(f"task.path `{spec.path}` is a file, not a folder; task.path must be {LAYOUTS}.")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present:
        if len(present) == 1:
            missing = "test" if present == ["train"] else "train"
            raise PulseError(
                f"task.path `{spec.path}` has {present[0]}/ but no {missing}/; add {missing}/ with the same label "
                f"folders, or put the label folders directly under task.path to split them by task.test_fraction."
            )
        if all((root / s / label).is_dir() for s in SPLITS for label in IMDB_LABELS):
            labels = list(IMDB_LABELS)  # aclImdb: unsup/ and the other folders are no labels
        else:
            names = {s: _subfolders(root / s) for s in SPLITS}
            if names["train"] != names["test"]:
                only_train = sorted(set(names["train"]) - set(names["test"]))
                only_test = sorted(set(names["test"]) - set(names["train"]))
                raise PulseError(
                    f"task.path `{spec.path}`: train/ and test/ have different label folders (only in train/: "
                    f"{', '.join(only_train) or 'none'}; only in test/: {', '.join(only_test) or 'none'}); "
                    "give both splits the same label folders."
                )
            labels = names["train"]
        _need_two(labels, root / "train", spec)
        return labels, {s: [(f, i) for i, label in enumerate(labels) for f in _documents(root / s / label, spec)]
                        for s in SPLITS}
    labels = _subfolders(root)
    _need_two(labels, root, spec)
    rng = np.random.default_rng([spec.seed, SPLIT_STREAM])
    split: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for i, label in enumerate(labels):
        files = _documents(root / label, spec)
        n = len(files)
        held = set(rng.permutation(n)[: min(max(round(n * spec.test_fraction), 1), n - 1)].tolist())
        for j, f in enumerate(files):
            split["test" if j in held else "train"].append((f, i))
    if not split["test"]:
        raise PulseError(
            f"task.path `{spec.path}`: every label folder holds a single document, so none can be held out for "
            "testing; add documents, or give train/ and test/ folders."
        )
    return labels, split


class LraText(SequenceClassification):
    """Byte-level document classification (LRA Text); accuracy of the predicted label."""

    kind = "lra_text"
    vocab_size = 256
    cache_examples = False  # every split is held as one byte array already

    def __init__(self, spec: LraTextSpec):
        super().__init__(spec)
        self._labels: list[str] | None = None
        self._docs: dict[str, ByteDocuments] = {}
        self._targets: dict[str, np.ndarray] = {}

    def _load(self) -> list[str]:
        if self._labels is None:
            labels, split = scan(self.spec)
            for s, items in split.items():
                items = [items[i] for i in spread(len(items), self.spec.eval_examples if s == "test" else None)]
                self._docs[s] = ByteDocuments([read_head(path, self.spec.max_len) for path, _ in items])
                self._targets[s] = np.array([label for _, label in items], dtype=np.int64)
            self._labels = labels
        return self._labels

    def check_data(self) -> None:
        """task.path's layout and that every document opens, without reading them (see IndexedTask)."""
        for items in scan(self.spec)[1].values():
            for path, _ in items:
                read_head(path, 0)

    @property
    def labels(self) -> list[str]:
        """The label names, in class order (read from task.path at first use)."""
        return self._load()

    @property
    def num_classes(self) -> int:  # known only from the data
        return len(self.labels)

    def size(self, split: str) -> int:
        self._load()
        return len(self._docs[split])

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        self._load()
        return self._docs[split][index], int(self._targets[split][index])
