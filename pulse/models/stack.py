"""The one residual stack every model kind uses: positions → residual layers → final norm.

# b batch · t time · d model
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


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


class ResidualStack(nn.Module):
    """Additive positions (optional) → residual layers → final norm, over (b, t, d) features.

    Model kinds derive from it (so their weights keep the names positions.*, layers.*,
    final_norm.*) and wrap `run` / `run_step` with their own input and output layers.
    The state is {"pos": tokens seen so far, "layers": one state per layer}; passing it back
    continues the sequence exactly, so split forwards and `step` equal one full pass.
    Rotary positions are not a module here: the assembler hands their base to the attention
    mixers that apply them. Params: the layers', the norm's and the positions'.
    """

    def __init__(self, *, layers: list[Residual], final_norm: nn.Module, positions: nn.Module | None = None):
        super().__init__()
        self.positions = positions
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm

    def _order_modules(self, first: str, last: str) -> None:
        """Put the wrapping model's input layer first and its head last, so weights, summaries and
        optimiser groups keep the order input → positions → layers → final norm → head."""
        order = [first, "positions", "layers", "final_norm", last]
        names = [n for n in order if n in self._modules] + [n for n in self._modules if n not in order]
        self._modules = {name: self._modules[name] for name in names}

    def stack_state(self, batch: int, *, device=None, dtype=None) -> dict[str, Any]:
        return {
            "pos": 0, "layers": [layer.mixer.init_state(batch, device=device, dtype=dtype) for layer in self.layers]
        }

    def run(self, x: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Normalised features (b, t, d) for inputs x (b, t, d), and the state after them."""
        if self.positions is not None:
            x = self.positions(x, offset=state["pos"])
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x, s = layer(x, s)
            new_states.append(s)
        return self.final_norm(x), {"pos": state["pos"] + x.shape[1], "layers": new_states}

    def run_step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Normalised features (b, d) for one input per row x_t (b, d), in O(1) for recurrent mixers."""
        if self.positions is not None:
            x_t = self.positions(x_t.unsqueeze(1), offset=state["pos"]).squeeze(1)
        new_states = []
        for layer, s in zip(self.layers, state["layers"], strict=True):
            x_t, s = layer.step(x_t, s)
            new_states.append(s)
        return self.final_norm(x_t), {"pos": state["pos"] + 1, "layers": new_states}
