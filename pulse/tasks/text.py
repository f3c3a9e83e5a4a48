"""Language modelling over a local corpus, reported per token and in bits per byte.

The corpus (pulse.data.readers: text files, JSON Lines, Parquet, a saved dataset; with no
path, the Python standard library's own sources, so nothing is downloaded) is tokenized
once into a cached token file (pulse.data.corpus; its format: pulse.data.cache), documents split
between training and validation by document. Documents are packed: each followed by the tokenizer's eos (the
byte tokenizer has one when model.vocab_size ≥ 259), cut into windows of seq_len + 1
tokens with no padding; `max_tokens` caps the training stream. With `reset_at_eos` (the
default) the eos opens the next document: every layer starts afresh there (`doc_starts`,
pulse.ops.documents), so a document's loss does not depend on what was packed before it and no
state or attention carries text across documents — the model learns each document as if alone.

Metrics: `loss` (nats per token), `perplexity`, and `bpb`, bits per byte: the summed nats
over the UTF-8 bytes the predicted tokens stand for, / ln 2. A byte model and a BPE model
compare on it. With the byte tokenizer and no eos (vocab 256) it equals loss / ln 2.

# b batch · t time (tokens) · v vocabulary
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pulse.data.cache import Corpus
from pulse.data.corpus import Progress, open_corpus
from pulse.data.readers import describe
from pulse.data.tokenizer import Tokenizer, reset_token
from pulse.errors import PulseError
from pulse.specs.tasks import TextSpec
from pulse.tasks.base import Batch, Sums
from pulse.tasks.io import TokenizedTask


class Text(TokenizedTask):
    """Next-token prediction on packed documents; bits per byte on held-out documents."""

    kind = "text"
    metric = "bpb"
    higher_is_better = False

    def __init__(self, spec: TextSpec, *, tokenizer: Tokenizer | None = None):
        super().__init__(spec, tokenizer=tokenizer)
        self._corpus: Corpus | None = None
        self._byte_lengths: torch.Tensor | None = None

    def prepare(self, *, progress: Progress | None = None, say: Callable[[str], None] | None = None) -> Corpus:
        """The tokenized corpus: reused from the cache, or prepared now (with progress)."""
        if self._corpus is None:
            self._corpus = open_corpus(self.spec, self.tokenizer, progress=progress, say=say)
        return self._corpus

    def _split(self, split: str) -> np.ndarray:
        corpus = self.prepare()
        if split == "train":
            return corpus.train[: self.spec.max_tokens] if self.spec.max_tokens else corpus.train
        return corpus.val

    def _windows(self, split: str) -> int:
        return (len(self._split(split)) - 1) // self.spec.seq_len

    def size(self, split: str) -> int:
        n = self._windows(split)
        if n < 1:
            raise PulseError(f"the {'training' if split == 'train' else 'validation'} split of {describe(self.spec)} "
                             f"has fewer than seq_len + 1 = {self.spec.seq_len + 1} tokens (task.max_tokens = "
                             f"{self.spec.max_tokens}); raise task.max_tokens or lower task.seq_len.")
        return n if split == "train" else min(n, self.spec.eval_windows)

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        data, t = self._split(split), self.spec.seq_len
        if split == "test":
            # evaluation windows are spread evenly over the whole validation stream
            indices = indices * self._windows(split) // self.size(split)
        windows = torch.from_numpy(np.stack([data[s * t : s * t + t + 1] for s in indices]).astype(np.int64))
        batch = {"ids": windows[:, :-1], "labels": windows[:, 1:]}  # (b, t) each
        reset = self.reset_token
        if reset is not None:
            batch["doc_starts"] = batch["ids"] == reset  # (b, t) bool: the eos opens the next document
        return batch

    @property
    def reset_token(self) -> int | None:
        """The eos when task.reset_at_eos (every layer starts afresh there), else None."""
        return reset_token(self.spec, self.tokenizer)

    def targets(self, batch: Batch) -> int:
        return batch["labels"].numel()

    def byte_lengths(self, device: torch.device) -> torch.Tensor:
        if self._byte_lengths is None or self._byte_lengths.device != device:
            self._byte_lengths = torch.from_numpy(self.tokenizer.byte_lengths()).to(device)
        return self._byte_lengths

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        h, _ = model.features(batch["ids"], doc_starts=batch.get("doc_starts"))
        logits = model.head(h).float()  # (b, t, v)
        labels = batch["labels"]
        count = torch.tensor(float(labels.numel()), device=labels.device)
        nbytes = self.byte_lengths(labels.device)[labels].sum().to(torch.float64)
        return {"loss_sum": F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"), "count": count,
                "bytes": nbytes}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["count"], 1.0)
        nbytes = sums.get("bytes", sums["count"])
        return {"loss": loss, "bpb": sums["loss_sum"] / max(nbytes, 1.0) / math.log(2),
                "perplexity": math.exp(min(loss, 50.0))}
