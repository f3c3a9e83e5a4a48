"""How tasks talk to the two families of models, by interface rather than by kind.

Token models (kind `lm` and anything like it) expose `features(ids) → (hidden, state)`
and a `head`; sequence models over continuous inputs (kind `sequence_pulse`) expose
`input_dim`, `output_dim`, `output_mode` and `forward(x, mask) → (outputs, state)`.

# b batch · t time · d model · v vocab · n labelled positions · i input features · o outputs
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pulse.data.tokenizer import Tokenizer, check_fits, unsized_tokenizer
from pulse.errors import PulseError
from pulse.tasks.base import IGNORE, Batch, IndexedTask, Sums, classification_sums, rng_for


def kind_of(model: nn.Module) -> str:
    return getattr(getattr(model, "spec", None), "kind", type(model).__name__)


def is_token_model(model: nn.Module) -> bool:
    return callable(getattr(model, "features", None)) and isinstance(getattr(model, "head", None), nn.Module)


def require_token_model(model: nn.Module, task: str, vocab: int) -> None:
    """A token task needs `features(ids)`, a `head`, and a vocabulary of at least `vocab` ids."""
    if not is_token_model(model):
        raise PulseError(
            f"task `{task}` feeds token ids to a language model, but model kind `{kind_of(model)}` has no token "
            "`features`/`head`; use a model of kind `lm` (for example a zoo card such as transformer-small)."
        )
    have = getattr(model, "vocab_size", 0)
    if have < vocab:
        raise PulseError(
            f"task `{task}` uses token ids 0..{vocab - 1} but the model's vocab_size is {have}; "
            f"set model.vocab_size = {vocab} (or more)."
        )


def require_sequence_model(model: nn.Module, task: str, *, input_dim: int, output_dim: int, output_mode: str) -> None:
    """A continuous-input sequence model of the right sizes and output mode."""
    kind = kind_of(model)
    if not all(hasattr(model, a) for a in ("input_dim", "output_dim", "output_mode")):
        raise PulseError(
            f"task `{task}` needs a token model (kind `lm`) or a sequence model (kind `sequence_pulse`); "
            f"model kind `{kind}` is neither."
        )
    wrong = [f"model.{name} = {want}" for name, want in
             (("input_dim", input_dim), ("output_dim", output_dim), ("output_mode", output_mode))
             if getattr(model, name) != want]
    if wrong:
        raise PulseError(f"task `{task}` with a `{kind}` model needs {', '.join(wrong)}; set {'; '.join(wrong)}.")


def labelled_logits(model: nn.Module, ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits only where there is a label: the head runs on n gathered positions, not b·t.

    With a large vocabulary (MQAR uses 8192) this skips almost all of the head's cost.
    """
    h, _ = model.features(ids)  # (b, t, d)
    mask = labels != IGNORE
    return model.head(h[mask]), labels[mask]  # (n, v), (n,)


def sequence_outputs(model: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """Outputs of a continuous-input sequence model: (b, o), or (b, t, o) in output_mode 'all'."""
    return model(x, mask)


class TokenizedTask(IndexedTask):
    """A task that reads text through a tokenizer, given when it is built (`build_task(spec, tokenizer=…)`: the
    one pulse.data.tokenizer.tokenizer_of resolves for the recipe); built without one, it reads with the
    tokenizer task.tokenizer names, unsized (pulse.data.tokenizer.unsized_tokenizer), loaded at first use."""

    spec: Any

    def __init__(self, spec: Any, *, tokenizer: Tokenizer | None = None):
        self.spec = spec
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = unsized_tokenizer(self.spec)
        return self._tokenizer

    def check_model(self, model: nn.Module) -> None:
        """A token model whose vocabulary takes every id of the task's tokenizer (the task is left as it is)."""
        require_token_model(model, self.kind, 1)
        check_fits(self.tokenizer, model.vocab_size)


class GeneratedTokenTask(IndexedTask):
    """Token sequences in, next-token labels out, over fixed generated train and test sets.

    Subclasses set `kind` and a module-level generator `make(spec, n, rng) -> (inputs,
    labels)`; each split is generated once from its own seed. Loss and accuracy count
    labelled positions only, and logits are computed only there.
    """

    make: Callable[[Any, int, np.random.Generator], tuple[Tensor, Tensor]]

    def __init__(self, spec: Any):
        self.spec = spec
        self._data: dict[str, tuple[Tensor, Tensor]] = {}

    def size(self, split: str) -> int:
        return self.spec.num_train if split == "train" else self.spec.num_test

    def batch(self, split: str, indices: np.ndarray) -> Batch:
        if split not in self._data:
            self._data[split] = type(self).make(self.spec, self.size(split), rng_for(self.spec.seed, split))
        inputs, labels = self._data[split]
        idx = torch.from_numpy(indices)
        return {"ids": inputs[idx], "labels": labels[idx]}

    def check_model(self, model: nn.Module) -> None:
        require_token_model(model, self.kind, self.spec.vocab_size)

    def forward(self, model: nn.Module, head: nn.Module | None, batch: Batch) -> Sums:
        return classification_sums(*labelled_logits(model, batch["ids"], batch["labels"]))
