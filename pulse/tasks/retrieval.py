"""LRA Retrieval (Tay et al., 2021, on the ACL Anthology Network of Radev et al., 2013): are
two documents related?

LRA pairs AAN papers, label 1 when one cites the other, and reads each byte by byte, the
first 4,000 bytes of each. As in LRA the model is a two-tower encoder: the same model turns
each document into one vector (`pooled`: a token model's last real hidden state, d =
model.dim; a sequence model's own output, d = output_dim), and a head classifies
[u, v, u·v, u − v] (4d → d → ReLU → 2), LRA's "NLI" interaction (ClassifierHeadDual in
lra_benchmarks/models/layers/common_layers.py). Both documents of a batch go through the
encoder in one pass.

Sources:

* `path`: LRA's files, lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv (a folder
  holding them, or that prefix). LRA's reader (lra_benchmarks/matching/input_pipeline.py,
  get_tsv_dataset) takes them as tab-separated, no header, no quoting, columns label (a
  float, 0 or 1), id1, id2, text1, text2; so does this one. Identical documents are stored once.
* no `path`: generated pairs, so the task runs anywhere. `num_topics` sources write one
  made-up language: `lexicon_size` words of 2-8 letters, each followed by one of its 4 shared
  successors (4 fixed permutations of the lexicon: the grammar every source shares). Each
  source has 2 permutations of its own, and takes its next word from them with probability
  topic_strength. Every transition matrix is an average of permutations, hence doubly
  stochastic: each word is equally likely in every source and at every position, so no word
  and no place gives the source away; only the source's own word pairs do, spread evenly
  through the text. Related (label 1) means both documents come from the same source; labels
  alternate with the index (balanced); the sources and the lengths (max_len/2 … max_len
  bytes each) come from the pair's own stream (seed, split, index); train and test share the
  sources (from the seed), not documents. At the defaults, a reader that knows nothing of the
  sources and answers "related" when the documents share a word pair outside the shared
  grammar is right on 57% of pairs from their first 500 bytes, 74% from 1,000, 98% from the
  whole documents: the evidence is spread over both.

# b batch · t time (bytes) · d pooled width
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.specs.tasks import LraRetrievalSpec
from pulse.tasks.base import Batch, Sums, classification_sums, rng_for
from pulse.tasks.classify import PAD, SequenceClassification
from pulse.tasks.io import is_token_model, require_sequence_model, require_token_model
from pulse.tasks.lra_text import ByteDocuments, spread

SHARED, OWN = 4, 2  # successors per word: in the shared grammar, and of each source's own
WORLD_STREAM = 2  # the sources draw from [seed, 2], apart from rng_for's train (0) and test (1) streams
COLUMNS = "label, id1, id2, text1, text2"


@dataclass
class World:
    """The generated language: words (bytes), shared successors (SHARED, L), each source's own (topics, OWN, L)."""

    words: list[bytes]
    shared: np.ndarray
    own: np.ndarray


def make_world(spec: LraRetrievalSpec) -> World:
    rng = np.random.default_rng([spec.seed, WORLD_STREAM])
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words: dict[bytes, None] = {}
    while len(words) < spec.lexicon_size:
        words.setdefault(letters[rng.integers(26, size=int(rng.integers(2, 9)))].tobytes())
    n = spec.lexicon_size
    shared = np.stack([rng.permutation(n) for _ in range(SHARED)]).astype(np.int32)
    own = np.stack([rng.permutation(n) for _ in range(spec.num_topics * OWN)]).astype(np.int32)
    return World(list(words), shared, own.reshape(spec.num_topics, OWN, n))


def document(world: World, source: int, n_bytes: int, strength: float, rng: np.random.Generator) -> bytes:
    """n_bytes of text by `source`: a walk over the words, each step from its own successors w.p. `strength`."""
    steps = n_bytes // 3 + 1  # words have ≥ 2 letters and a space, so this many always fill n_bytes
    own_step = (rng.random(steps) < strength).tolist()
    pick_own, pick_shared = rng.integers(OWN, size=steps).tolist(), rng.integers(SHARED, size=steps).tolist()
    own, shared = world.own[source].tolist(), world.shared.tolist()
    w, out, size = int(rng.integers(len(world.words))), [], 0
    for i in range(steps):
        out.append(world.words[w])
        size += len(world.words[w]) + 1
        if size > n_bytes:  # the words joined by spaces cover n_bytes
            break
        w = own[pick_own[i]][w] if own_step[i] else shared[pick_shared[i]][w]
    return b" ".join(out)[:n_bytes]


def generated_pair(world: World, spec: LraRetrievalSpec, split: str, index: int) -> tuple[bytes, bytes, int, int, int]:
    """Pair `index` of a split from its own stream: (text1, text2, label, source1, source2)."""
    rng = rng_for(spec.seed, split, index)
    label = index % 2
    a = int(rng.integers(spec.num_topics))
    b = a if label else (a + int(rng.integers(1, spec.num_topics))) % spec.num_topics
    n1, n2 = rng.integers((spec.max_len + 1) // 2, spec.max_len + 1, size=2).tolist()
    return (document(world, a, n1, spec.topic_strength, rng), document(world, b, n2, spec.topic_strength, rng),
            label, a, b)


@dataclass
class Pairs:
    """Pairs read from a file: documents stored once, (n, 2) document indices, n labels."""

    docs: ByteDocuments
    index: np.ndarray
    labels: np.ndarray


def _require(path: Path) -> None:
    if not path.is_file():
        raise PulseError(
            f"task.path: the AAN file {path} does not exist. LRA's retrieval data (lra_release/tsv_data) holds "
            "new_aan_pairs.train.tsv, .eval.tsv and .test.tsv; point task.path at that folder, or omit task.path "
            "for generated pairs."
        )


def _fields(path: Path, line_no: int, line: bytes) -> tuple[int, bytes, bytes] | None:
    """One line of an AAN file as (label, text1, text2); None for an empty line."""
    line = line.rstrip(b"\n").removesuffix(b"\r")
    if not line:
        return None
    fields = line.split(b"\t")
    if len(fields) != 5:
        raise PulseError(f"{path}, line {line_no}: {len(fields)} tab-separated columns, expected 5 "
                         f"({COLUMNS}, as LRA's new_aan_pairs files); fix or remove that line.")
    try:
        label = float(fields[0])
    except ValueError:
        label = -1.0
    if label not in (0.0, 1.0):
        raise PulseError(f"{path}, line {line_no}: the label {fields[0].decode(errors='replace')!r} is "
                         f"not 0 or 1 (columns: {COLUMNS}); fix that line.")
    return int(label), fields[3], fields[4]


def read_pairs(path: Path, max_len: int) -> Pairs:
    """An AAN TSV file (no header, no quoting; columns label, id1, id2, text1, text2), each text cut to max_len."""
    _require(path)
    seen: dict[bytes, int] = {}
    docs: list[bytes] = []
    pairs: list[tuple[int, int]] = []
    labels: list[int] = []
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            fields = _fields(path, line_no, line)
            if fields is None:
                continue
            ids = []
            for text in (fields[1][:max_len], fields[2][:max_len]):
                if text not in seen:
                    seen[text] = len(docs)
                    docs.append(text)
                ids.append(seen[text])
            pairs.append((ids[0], ids[1]))
            labels.append(fields[0])
    if not pairs:
        raise _no_pairs(path)
    return Pairs(ByteDocuments(docs), np.array(pairs, dtype=np.int64), np.array(labels, dtype=np.int64))


def check_pairs(path: Path) -> None:
    """The file exists and opens, and its first pair reads (the rest is read at first use)."""
    _require(path)
    try:
        with open(path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if _fields(path, line_no, line) is not None:
                    return
    except OSError as err:
        raise PulseError(f"cannot read {path}: {err.strerror or err}; fix its permissions.") from None
    raise _no_pairs(path)


def _no_pairs(path: Path) -> PulseError:
    return PulseError(f"{path} holds no pairs; give LRA's new_aan_pairs file, or omit task.path for generated pairs.")


class PairHead(nn.Module):
    """LRA's two-tower interaction: [u, v, u·v, u − v] (b, 4d) → d → ReLU → classes."""

    def __init__(self, width: int, classes: int, *, device=None, dtype=None):
        super().__init__()
        self.hidden = nn.Linear(4 * width, width, device=device, dtype=dtype)
        self.out = nn.Linear(width, classes, device=device, dtype=dtype)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(torch.cat([u, v, u * v, u - v], dim=-1))))


class LraRetrieval(SequenceClassification):
    """Related or not, from two documents' bytes (LRA Retrieval); accuracy."""

    kind = "lra_retrieval"
    vocab_size = 256
    num_classes = 2
    cache_examples = False  # file pairs are held compactly; generated ones are cheap to redraw

    def __init__(self, spec: LraRetrievalSpec):
        super().__init__(spec)
        self._pairs: dict[str, Pairs] = {}
        self._world: World | None = None

    def file(self, split: str) -> Path:
        """The AAN file of a split: task.path is a folder, LRA's prefix …/new_aan_pairs, or its train file."""
        root = Path(self.spec.path).expanduser()
        prefix = root / "new_aan_pairs" if root.is_dir() else root.with_name(root.name.removesuffix(".train.tsv"))
        return prefix.with_name(f"{prefix.name}.{'train' if split == 'train' else self.spec.held_out}.tsv")

    def check_data(self) -> None:
        """Both splits' AAN files exist and begin with a pair, when task.path is given (see IndexedTask)."""
        if self.spec.path is not None:
            for split in ("train", "test"):
                check_pairs(self.file(split))

    def pairs(self, split: str) -> Pairs:
        if split not in self._pairs:
            p = read_pairs(self.file(split), self.spec.max_len)
            keep = spread(len(p.labels), self.spec.eval_examples if split == "test" else None)
            self._pairs[split] = Pairs(p.docs, p.index[keep], p.labels[keep])
        return self._pairs[split]

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = make_world(self.spec)
        return self._world

    def size(self, split: str) -> int:
        if self.spec.path is None:
            return self.spec.num_train if split == "train" else self.spec.num_test
        return len(self.pairs(split).labels)

    def pair(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Pair `index` of a split: (ids of the first document, ids of the second, label)."""
        if self.spec.path is not None:
            p = self.pairs(split)
            i, j = p.index[index].tolist()
            return p.docs[i], p.docs[j], int(p.labels[index])
        a, b, label, _, _ = generated_pair(self.world, self.spec, split, index)
        return (np.frombuffer(a, dtype=np.uint8).astype(np.int64), np.frombuffer(b, dtype=np.uint8).astype(np.int64),
                label)

    def encoded(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """The pair as one byte sequence, first document then second (a one-tower view; batches keep them apart)."""
        a, b, label = self.pair(split, index)
        return np.concatenate([a, b]), label

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        pairs = [self.pair(split, int(i)) for i in indices]
        t = max(max(len(a), len(b)) for a, b, _ in pairs)
        ids = np.full((2, len(pairs), t), PAD, dtype=np.int64)  # both towers padded to one width
        for row, (a, b, _) in enumerate(pairs):
            ids[0, row, : len(a)], ids[1, row, : len(b)] = a, b
        return {
            "ids1": torch.from_numpy(ids[0]), "ids2": torch.from_numpy(ids[1]),
            "lengths1": torch.tensor([len(a) for a, _, _ in pairs]),
            "lengths2": torch.tensor([len(b) for _, b, _ in pairs]),
            "labels": torch.tensor([label for _, _, label in pairs]),
        }

    def tokens(self, batch: Batch) -> int:
        return int(batch["lengths1"].sum() + batch["lengths2"].sum())

    def check_model(self, model: nn.Module) -> None:
        if is_token_model(model):
            require_token_model(model, self.kind, self.vocab_size)
            return
        mode = "mean" if getattr(model, "output_mode", None) == "mean" else "last"
        require_sequence_model(model, self.kind, input_dim=self.vocab_size, output_mode=mode,
                               output_dim=getattr(model, "output_dim", 0))  # any width: it feeds the pair head

    def make_head(self, model: nn.Module, *, device=None, dtype=None) -> nn.Module:
        width = model.dim if is_token_model(model) else model.output_dim
        return PairHead(width, self.num_classes, device=device, dtype=dtype)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        ids1, ids2 = batch["ids1"], batch["ids2"]
        t = max(ids1.shape[1], ids2.shape[1])
        ids = torch.cat([F.pad(x, (0, t - x.shape[1]), value=PAD) for x in (ids1, ids2)])  # (2b, t)
        pooled = self.pooled(model, ids, torch.cat([batch["lengths1"], batch["lengths2"]]))  # (2b, d)
        u, v = pooled.split(ids1.shape[0])
        return classification_sums(head(u, v), batch["labels"])

    def fit_model(self, model: dict[str, Any]) -> dict[str, Any]:
        """A copy of a recipe's model table sized for this task (a sequence model's output is the tower's vector)."""
        model = super().fit_model(model)
        if "input_dim" in model:
            model["output_dim"] = model.get("dim", 128)
        return model
