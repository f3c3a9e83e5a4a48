"""The generic residual language model every LM recipe assembles into.

# b batch · t time · d model · v vocab
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pulse.errors import PulseError


class Residual(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) when an MLP is given."""

    def __init__(self, mixer: nn.Module, norm1: nn.Module, mlp: nn.Module | None, norm2: nn.Module | None):
        super().__init__()
        self.norm1, self.mixer = norm1, mixer
        self.norm2, self.mlp = norm2, mlp

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        h, state = self.mixer(self.norm1(x), state)
        x = x + h
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, state

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        h, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + h
        if self.mlp is not None:
            x_t = x_t + self.mlp(self.norm2(x_t))
        return x_t, state


class LanguageModel(nn.Module):
    """Token embedding → positions → residual layers → final norm → head (tied or not).

    The state is {"pos": tokens seen so far, "layers": one state per layer}; passing it
    back continues the sequence exactly (split and step equal one full forward pass).
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
        self.positions = positions
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.head = nn.Linear(dim, vocab_size, bias=False, device=device, dtype=dtype)
        if tie_embeddings:
            self.head.weight = self.embed.weight
        self.tie_embeddings = tie_embeddings
        nn.init.normal_(self.embed.weight, std=0.02)

    def init_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        device = device if device is not None else self.embed.weight.device
        dtype = dtype if dtype is not None else self.embed.weight.dtype
        return {"pos": 0, "layers": [layer.mixer.init_state(batch, device=device, dtype=dtype) for layer in self.layers]}

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

    def features(self, ids: Tensor, state: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Final hidden states (after the last norm) for ids (b, t), and the new state."""
        self._check_ids(ids, 2)
        if state is None:
            state = self.init_state(ids.shape[0])
        x = self.embed(ids)  # (b, t, d)
        if self.positions is not None:
            x = self.positions(x, offset=state["pos"])
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x, s = layer(x, s)
            new_states.append(s)
        return self.final_norm(x), {"pos": state["pos"] + ids.shape[1], "layers": new_states}

    def forward(self, ids: Tensor, state: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, t, v) and the state after these tokens."""
        h, state = self.features(ids, state)
        return self.head(h), state

    def step(self, ids_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits (b, v) for one new token per row, in O(1) for recurrent mixers."""
        self._check_ids(ids_t, 1)
        x = self.embed(ids_t)  # (b, d)
        if self.positions is not None:
            x = self.positions(x.unsqueeze(1), offset=state["pos"]).squeeze(1)
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x, s = layer.step(x, s)
            new_states.append(s)
        return self.head(self.final_norm(x)), {"pos": state["pos"] + 1, "layers": new_states}
