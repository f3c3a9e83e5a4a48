"""The one residual stack every model kind uses: positions → residual layers → final norm.

# b batch · t time · d model
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pulse.ops.documents import NO_START, DocStarts, since_start, starts_mask, step_mask


class Residual(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) when an MLP is given."""

    def __init__(self, mixer: nn.Module, norm1: nn.Module, mlp: nn.Module | None, norm2: nn.Module | None):
        super().__init__()
        self.norm1, self.mixer = norm1, mixer
        self.norm2, self.mlp = norm2, mlp

    def forward(self, x: Tensor, state: Any = None, *, doc_starts: Tensor | None = None) -> tuple[Tensor, Any]:
        h, state = self.mixer(self.norm1(x), state) if doc_starts is None else \
            self.mixer(self.norm1(x), state, doc_starts=doc_starts)
        x = x + h
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x, state

    def step(self, x_t: Tensor, state: Any, *, doc_starts: Tensor | None = None) -> tuple[Tensor, Any]:
        h, state = self.mixer.step(self.norm1(x_t), state) if doc_starts is None else \
            self.mixer.step(self.norm1(x_t), state, doc_starts=doc_starts)
        x_t = x_t + h
        if self.mlp is not None:
            x_t = x_t + self.mlp(self.norm2(x_t))
        return x_t, state


class StackHolder(nn.Module):
    """A model around a `stack` (ResidualStack) child: its layers, positions and final norm read through."""

    stack: ResidualStack

    @property
    def layers(self) -> nn.ModuleList:
        return self.stack.layers

    @property
    def positions(self) -> nn.Module | None:
        return self.stack.positions

    @property
    def final_norm(self) -> nn.Module:
        return self.stack.final_norm


class ResidualStack(nn.Module):
    """Additive positions (optional) → residual layers → final norm, over (b, t, d) features.

    Model kinds hold it as their child `stack` (weights stack.positions.*, stack.layers.*,
    stack.final_norm.*; `StackHolder` reads them as model.layers …) and wrap `run` / `run_step`
    with their own input and output layers.
    The state is {"pos": tokens seen so far, "layers": one state per layer}; passing it back
    continues the sequence exactly, so split forwards and `step` equal one full pass.
    `doc_starts` (pulse.ops.documents) is checked once and handed to every mixer; learned
    positions then count from each document's start ("pos" becomes one count per row).
    Rotary positions are not a module here: the assembler hands their base to the attention
    mixers that apply them. Params: the layers', the norm's and the positions'.
    """

    def __init__(self, *, layers: list[Residual], final_norm: nn.Module, positions: nn.Module | None = None):
        super().__init__()
        self.positions = positions
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm

    def stack_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        return {
            "pos": 0, "layers": [layer.mixer.init_state(batch, device=device, dtype=dtype) for layer in self.layers]
        }

    def run(self, x: Tensor, state: dict[str, Any], doc_starts: DocStarts = None) -> tuple[Tensor, dict[str, Any]]:
        """Normalised features (b, t, d) for inputs x (b, t, d), and the state after them."""
        b, t = x.shape[0], x.shape[1]
        mask = starts_mask(doc_starts, b, t, x.device, "the model")
        pos = state["pos"]
        if mask is None and isinstance(pos, int):
            index, new_pos = None, pos + t
        else:  # one position per token, counted from its document's start
            since = since_start(mask) if mask is not None else torch.full((b, t), NO_START, device=x.device)
            before = torch.as_tensor(pos, device=x.device).expand(b).unsqueeze(1) + torch.arange(t, device=x.device)
            index = torch.where(since < NO_START, since, before)
            new_pos = index[:, -1] + 1
        if self.positions is not None:
            x = self.positions(x, offset=pos) if index is None else self.positions(x, index=index)
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x, s = layer(x, s, doc_starts=mask)
            new_states.append(s)
        return self.final_norm(x), {"pos": new_pos, "layers": new_states}

    def run_step(self, x_t: Tensor, state: dict[str, Any], doc_starts: Tensor | None = None
                 ) -> tuple[Tensor, dict[str, Any]]:
        """Normalised features (b, d) for one input per row x_t (b, d), in O(1) for recurrent mixers."""
        rows = step_mask(doc_starts, x_t.shape[0], x_t.device, "the model")
        pos = state["pos"]
        if rows is not None or not isinstance(pos, int):
            pos = torch.as_tensor(pos, device=x_t.device).expand(x_t.shape[0])
            pos = pos if rows is None else pos.masked_fill(rows, 0)
        if self.positions is not None:
            x_t = (self.positions(x_t.unsqueeze(1), offset=pos) if isinstance(pos, int)
                   else self.positions(x_t.unsqueeze(1), index=pos.unsqueeze(1))).squeeze(1)
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x_t, s = layer.step(x_t, s, doc_starts=rows)
            new_states.append(s)
        return self.final_norm(x_t), {"pos": pos + 1, "layers": new_states}
