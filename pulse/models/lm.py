"""The generic residual language model every LM recipe assembles into.

# b batch · t time · d model · v vocab
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.errors import PulseError
from pulse.models.stack import Residual, ResidualStack, StackHolder
from pulse.ops.documents import DocStarts

IGNORE = -100  # the label of a position that takes no loss (PyTorch's and Hugging Face's ignore_index)


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The mean cross-entropy of predicting labels[:, 1:] from logits[:, :-1] (labels (b, t) are shifted here, as
    in Hugging Face, for logits (b, t, v)); positions labelled IGNORE take no part. Half-precision logits are
    upcast for a stable softmax (float64 stays float64); the labels follow the logits to their device."""
    if labels.shape != logits.shape[:-1]:
        raise PulseError(f"labels must have the shape of input_ids {tuple(logits.shape[:-1])}, got "
                         f"{tuple(labels.shape)}.")
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1).to(logits.device), ignore_index=IGNORE)


class LanguageModel(StackHolder):
    """Token embedding → the residual stack (positions → layers → final norm; the child `stack`) → head (tied
    or not).

    The state is the stack's, {"pos": tokens seen so far, "layers": one state per layer};
    passing it back continues the sequence exactly (split and step equal one full pass).
    Params: v·d (embedding) + stack + v·d (head, 0 when tied).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int,
        layers: list[Residual],
        final_norm: nn.Module,
        positions: nn.Module | None = None,
        tie_embeddings: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.embed = nn.Embedding(vocab_size, dim, device=device, dtype=dtype)
        self.stack = ResidualStack(layers=layers, final_norm=final_norm, positions=positions)
        self.head = nn.Linear(dim, vocab_size, bias=False, device=device, dtype=dtype)
        if tie_embeddings:
            self.head.weight = self.embed.weight
        self.tie_embeddings = tie_embeddings
        nn.init.normal_(self.embed.weight, std=0.02)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.embed.weight.device
        dtype = dtype if dtype is not None else self.embed.weight.dtype
        return self.stack.stack_state(batch, device=device, dtype=dtype)

    def example_input(self, batch: int, seq_len: int, *, device=None) -> Tensor:
        """Token ids of the right shape for inspection tools (summarize, bench)."""
        return torch.zeros(batch, seq_len, dtype=torch.long, device=device)

    def _check_ids(self, ids: Tensor, ndim: int) -> None:
        if ids.ndim != ndim or ids.dtype not in (torch.int64, torch.int32) or (ndim == 2 and ids.shape[1] == 0):
            want = "(batch, time)" if ndim == 2 else "(batch,)"
            raise PulseError(f"expected integer token ids of shape {want}, got {tuple(ids.shape)} {ids.dtype}.")
        if ids.numel() and not ids.device.type == "meta" and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise PulseError(
                f"token ids must lie in 0..{self.vocab_size - 1} (vocab_size), got {int(ids.min())}..{int(ids.max())}."
            )

    def features(self, ids: Tensor, state: dict[str, Any] | None = None, *,
                 doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Any]]:
        """Final hidden states (after the last norm) for ids (b, t), and the new state; with doc_starts
        (pulse.ops.documents) every layer starts fresh where a document starts."""
        self._check_ids(ids, 2)
        if state is None:
            state = self.init_state(ids.shape[0])
        return self.stack.run(self.embed(ids), state, doc_starts)

    def forward(self, ids: Tensor, state: dict[str, Any] | None = None, *,
                doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, t, v) and the state after these tokens."""
        h, state = self.features(ids, state, doc_starts=doc_starts)
        return self.head(h), state

    def step(self, ids_t: Tensor, state: dict[str, Any], *,
             doc_starts: Tensor | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, v) for one new token per row, in O(1) for recurrent mixers; doc_starts (b,) bool
        starts those rows afresh at this token."""
        self._check_ids(ids_t, 1)
        h, state = self.stack.run_step(self.embed(ids_t), state, doc_starts)
        return self.head(h), state
