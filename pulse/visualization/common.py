"""What both visualizers share: running a model under capture, token labels, layer names, saving figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pulse.errors import PulseError  # noqa: E402
from pulse.visualization.capture import Capture, capture  # noqa: E402


def layer_kind(module: nn.Module) -> str:
    """The registered kind a mixer was built from (pulse, pulse_managed, attention, …), else its class name."""
    from pulse import registry

    if getattr(module, "manager", None) is not None:
        return "pulse_managed"
    if getattr(module, "allocator", None) is not None:
        return "pulse_adaptive"
    for entry in registry.entries("*", "mixer"):
        if entry.module is type(module):
            return entry.kind
    name = type(module).__name__
    return {
        "PulseLayer": "pulse", "DeltaSlotLayer": "pulse_delta", "HierarchicalStateManager": "hierarchical"
    }.get(name, name)


def mixers(model: nn.Module) -> list[tuple[int, str, nn.Module]]:
    """(layer index, module path, mixer) for every residual layer's mixer, in order."""
    out = []
    for path, module in model.named_modules():
        parts = path.split(".")
        if len(parts) >= 3 and parts[-1] == "mixer" and parts[-3] == "layers" and parts[-2].isdigit():
            out.append((int(parts[-2]), path, module))
    return out


def describe_kinds(model: nn.Module) -> str:
    """'attention ×4' style summary of a model's mixer kinds."""
    counts: dict[str, int] = {}
    for _, _, m in mixers(model):
        counts[layer_kind(m)] = counts.get(layer_kind(m), 0) + 1
    return ", ".join(f"{k} ×{n}" for k, n in counts.items()) or "no sequence-mixing layers"


def as_ids(input_ids: Any, model: nn.Module) -> Tensor:
    """Token ids (1, t) or (b, t) on the model's device; a str is encoded with the model's tokenizer."""
    if isinstance(input_ids, str):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise PulseError("pass token ids, not text: this model has no tokenizer to encode it.")
        input_ids = torch.tensor([tok.encode(input_ids)])
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 1:
        ids = ids.unsqueeze(0)
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype not in (torch.int64, torch.int32):
        raise PulseError(
            f"expected integer token ids of shape (time,) or (batch, time), got {tuple(ids.shape)} {ids.dtype}."
        )
    device = next(model.parameters()).device
    if device.type == "meta":
        raise PulseError("the model lives on the meta device and has no weights; build it on a real device to draw it.")
    return ids.to(device)


def token_labels(ids: Tensor, model: nn.Module) -> list[str]:
    """One short printable label per id of a 1-D id tensor: the byte's character, ␣ for a space, else #id."""
    tok = getattr(model, "tokenizer", None)
    labels = []
    for i in ids.tolist():
        text = tok.decode([i]) if tok is not None and i < getattr(tok, "vocab_size", 256) else ""
        if len(text) == 1 and text.isprintable() and text != " ":
            labels.append(text)
        else:
            labels.append({" ": "␣", "\n": "\\n", "\t": "\\t"}.get(text, f"#{i}"))
    return labels


def run_captured(model: nn.Module, ids: Tensor) -> tuple[Capture, Any]:
    """Run model(ids) in eval mode without gradients under capture; returns the records and the output."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model) as cap:
            out = model(ids)
    finally:
        model.train(was_training)
    return cap, out


def save_figure(fig: plt.Figure, path: str | Path | None) -> None:
    """Write fig to path atomically (temporary file, then rename); nothing when path is None."""
    if path is None:
        return
    from pulse.paths import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight",
                                               format=(path.suffix.lstrip(".") or "png")))


def tick_tokens(ax: plt.Axes, labels: list[str] | None, axis: str, limit: int = 64) -> None:
    """Label an axis with tokens when there are few enough to read, else with positions."""
    if not labels:
        return
    n = len(labels)
    step = max(1, -(-n // limit))
    ticks = list(range(0, n, step))
    shown = [labels[i] if step == 1 else f"{i}" for i in ticks]
    if axis == "x":
        short = all(len(label) <= 2 for label in shown)
        ax.set_xticks(ticks, shown, rotation=0 if short else 90, fontsize=7 if step == 1 else 8)
    else:
        ax.set_yticks(ticks, shown, fontsize=7 if step == 1 else 8)
