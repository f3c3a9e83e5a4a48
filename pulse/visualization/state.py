"""Pictures of PULSE slot banks: how slots evolve over chunks, how alike they are, what they read.

A trace runs the model once over a prompt under `capture` and keeps batch row 0 of what
each chunk-recurrent layer reported: the slots each chunk read S_j (after chunks < j),
the routing weights of every slot over the tokens of each completed chunk, each token's
attention on the slots, and (pulse_adaptive) the slot budget of each chunk. Slot
importance σ(w_i) of a pulse_managed layer is read from its StateManager.

# n chunks · s slots · k slot dim · h heads · c chunk size · t tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pulse.blocks.pulse.chunked import ChunkRecurrentMixer
from pulse.blocks.pulse.delta_slots import DeltaSlotLayer
from pulse.errors import PulseError
from pulse.visualization.common import (
    as_ids,
    describe_kinds,
    layer_kind,
    mixers,
    run_captured,
    save_figure,
    tick_tokens,
    token_labels,
)


@dataclass
class LayerTrace:
    """Batch row 0 of one slot layer over one prompt."""

    index: int
    path: str
    kind: str
    chunk_size: int
    slots: Tensor  # (n_read, s, k): slots chunk j read
    route: Tensor | None = None  # (n_done, h, s, c): routing weights per completed chunk
    read: Tensor | None = None  # (h, t, s): each token's attention on the slots
    budget: Tensor | None = None  # (n_read,): slot budget per chunk (pulse_adaptive)
    importance: Tensor | None = None  # (s,): σ(w_i) of the active slots (pulse_managed)
    final: Tensor | None = None  # (s, k): the slots after the last complete chunk (from the returned state)

    @property
    def title(self) -> str:
        return f"layer {self.index} ({self.kind})"


@dataclass
class StateTrace:
    ids: Tensor  # (t,)
    tokens: list[str]
    layers: list[LayerTrace]


class StateVisualizer:
    """Slot dynamics, slot similarity, routing and allocation figures for a model with PULSE layers.

    `model` is a PulseForCausalLM or any module whose forward takes token ids (b, t) and
    contains PULSE slot layers (pulse with any gate, pulse_delta — whose slots are the rows of
    its delta-rule bank, and there is no routing — pulse_managed, pulse_adaptive, hierarchical).
    Every plot returns the matplotlib Figure and writes it when save_path
    is given.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = [(i, p, m) for i, p, m in mixers(model) if isinstance(m, (ChunkRecurrentMixer, DeltaSlotLayer))]
        if not self.layers:
            raise PulseError(
                f"{type(model).__name__} has no PULSE slot layers (its layers: {describe_kinds(model)}), "
                "so there are no slot states to plot; use a model with pulse (any gate), pulse_managed, "
                "pulse_adaptive or hierarchical layers, or AttentionVisualizer for attention layers."
            )

    def trace(self, input_ids: Any) -> StateTrace:
        """Run the model once over input_ids (ids or text) and collect what every slot layer reported."""
        ids = as_ids(input_ids, self.model)
        cap, out = run_captured(self.model, ids)
        traces = []
        for index, path, module in self.layers:
            slots = cap.get(path, "slots")
            route = cap.get(path, "route")
            if route:
                route = torch.cat([r[0].unsqueeze(0) if r.ndim == 4 else r[0] for r in route])  # (n_done, h, s, c)
            read, budget = cap.get(path, "read"), cap.get(path, "budget")
            manager = getattr(module, "manager", None)
            traces.append(LayerTrace(
                index=index, path=path, kind=layer_kind(module), chunk_size=module.chunk_size,
                slots=slots[0][0].float().cpu(), route=route.float().cpu() if len(route) else None,
                read=read[0][0].float().cpu() if read else None, budget=budget[0][0].float().cpu() if budget else None,
                importance=manager.importance_weights().detach().float().cpu() if manager is not None else None,
                final=_final_slots(out, index),
            ))
        return StateTrace(ids=ids[0].cpu(), tokens=token_labels(ids[0].cpu(), self.model), layers=traces)

    def states(self, input_ids: Any) -> dict[str, Tensor]:
        """The slots (s, k) each slot layer holds after the last complete chunk of input_ids, by layer title."""
        trace = self.trace(input_ids)
        return {layer.title: layer.final if layer.final is not None else layer.slots[-1] for layer in trace.layers}

    def plot_state_dynamics(self, input_ids: Any, save_path: str | Path | None = None) -> plt.Figure:
        """Per slot layer, over chunks: slot norms ‖S_j,i‖, drift cos(S_j,i, S_0,i) from the initial slots,
        and how much chunk j−1 rewrote each slot, ‖S_j,i − S_j−1,i‖ / ‖S_j−1,i‖."""
        trace = self.trace(input_ids)
        fig, axes = plt.subplots(len(trace.layers), 3, figsize=(17, 1.2 + 3.2 * len(trace.layers)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1.3, 1.3]})
        for row, layer in zip(axes, trace.layers, strict=True):
            slots = layer.slots  # (n, s, k)
            xlabel = f"chunk j (slots as chunk j reads them;\n{layer.chunk_size} tokens per chunk)"
            norms = slots.norm(dim=-1)  # (n, s)
            chunks = range(norms.shape[0])
            row[0].fill_between(chunks, norms.min(dim=1).values.numpy(), norms.max(dim=1).values.numpy(), alpha=0.3,
                                label="min–max over slots")
            row[0].plot(chunks, norms.mean(dim=1).numpy(), marker="o", label="mean over slots")
            row[0].set_ylim(0, 1.15 * float(norms.max()) + 1e-6)
            row[0].set(title=f"{layer.title}: slot norms", xlabel=xlabel, ylabel=r"$\|S_{j,i}\|$")
            row[0].legend(fontsize=8, loc="lower right")
            # a bank that starts empty (gate delta) drifts from the first slots it holds instead
            ref = next((j for j in range(len(slots)) if bool(norms[j].gt(0).any())), 0)
            drift = F.cosine_similarity(slots, slots[ref : ref + 1], dim=-1).T  # (s, n)
            drift[:, :ref] = float("nan")
            _heatmap(fig, row[1], drift, f"cosine to the slot at chunk {ref}", cmap="RdBu_r", vmin=-1, vmax=1)
            start = "the initial slots" if ref == 0 else f"the first written slots (chunk {ref}; the bank starts empty)"
            row[1].set(title=f"{layer.title}: drift from {start}", xlabel=xlabel, ylabel="slot")
            before = slots[:-1].norm(dim=-1)
            change = (slots[1:] - slots[:-1]).norm(dim=-1) / before.clamp_min(1e-12)
            change[before == 0] = float("nan")  # an empty slot was written, not rewritten
            if change.numel():
                _heatmap(fig, row[2], change.T, r"$\|S_j - S_{j-1}\| \,/\, \|S_{j-1}\|$", cmap="magma", x0=1, vmin=0)
                row[2].set(title=f"{layer.title}: how much chunk j−1 rewrote each slot", xlabel=xlabel, ylabel="slot")
            else:
                row[2].axis("off")
                row[2].text(0.5, 0.5, f"one chunk only ({len(trace.ids)} tokens, chunk size {layer.chunk_size}):\n"
                            "no slot update yet; give a longer prompt", ha="center", va="center")
        fig.suptitle(f"Slot dynamics over a {len(trace.ids)}-token prompt (batch row 0)")
        fig.tight_layout()
        save_figure(fig, save_path)
        return fig

    def plot_state_similarity(self, states: Any, save_path: str | Path | None = None) -> plt.Figure:
        """Slot–slot cosine similarity of each bank in `states`: a tensor (s, k) or (b, s, k) (row 0),
        a list of them, or a dict {title: tensor} such as `states(input_ids)` returns."""
        banks = _banks(states)
        fig, axes = plt.subplots(1, len(banks), figsize=(4.6 * len(banks), 4.2), squeeze=False)
        for ax, (title, bank) in zip(axes[0], banks.items(), strict=True):
            unit = F.normalize(bank.float(), dim=-1)
            image = ax.imshow((unit @ unit.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
            fig.colorbar(image, ax=ax, fraction=0.046, label="cosine similarity")
            ax.set_title(f"{title}: {bank.shape[0]} slots")
            ax.set_xlabel("slot")
            ax.set_ylabel("slot")
        fig.suptitle("Slot–slot cosine similarity (1 = same direction, 0 = orthogonal, −1 = opposite)")
        fig.tight_layout()
        save_figure(fig, save_path)
        return fig

    def plot_routing(self, input_ids: Any, save_path: str | Path | None = None) -> plt.Figure:
        """Per PULSE layer: the weight each slot gave each token when its chunk was written (mean over heads)."""
        trace = self.trace(input_ids)
        routed = [layer for layer in trace.layers if layer.route is not None]
        if not routed:
            kinds = ", ".join(sorted({layer.kind for layer in trace.layers}))
            raise PulseError(
                f"no routing weights to plot: either the prompt ({len(trace.ids)} tokens) is shorter than one chunk "
                f"(chunk size {min(layer.chunk_size for layer in trace.layers)}), so no chunk was written yet, or the "
                f"slot layers ({kinds}) do not route tokens through a TokenToStateRouter. Give a longer prompt."
            )
        width = min(16, max(8, 0.16 * len(trace.ids) + 3))
        fig, axes = plt.subplots(len(routed), 1, figsize=(width, 1.2 + 2.6 * len(routed)), squeeze=False)
        for ax, layer in zip(axes[:, 0], routed, strict=True):
            weights = layer.route.mean(dim=1)  # (n_done, s, c)
            n, s, c = weights.shape
            _heatmap(fig, ax, weights.permute(1, 0, 2).reshape(s, n * c), "routing weight",
                     cmap="Blues", vmin=0)
            for j in range(1, n):
                ax.axvline(j * c - 0.5, color="black", lw=0.8)
            tick_tokens(ax, trace.tokens[: n * c], "x")
            ax.set_xlabel(f"token (vertical lines: chunk boundaries, {c} tokens per chunk)")
            ax.set_ylabel("slot")
            ax.set_title(f"{layer.title}: which tokens each slot read when each chunk was written "
                         f"(mean over {layer.route.shape[1]} heads; a slot's weights within a chunk sum to 1)")
        fig.tight_layout()
        save_figure(fig, save_path)
        return fig

    def plot_slot_allocation(self, input_ids: Any, save_path: str | Path | None = None) -> plt.Figure:
        """Slot importance σ(w_i) of pulse_managed layers and the per-chunk slot budget of pulse_adaptive layers."""
        trace = self.trace(input_ids)
        shown = [layer for layer in trace.layers if layer.importance is not None or layer.budget is not None]
        if not shown:
            kinds = ", ".join(sorted({layer.kind for layer in trace.layers}))
            raise PulseError(
                f"no slot importance or allocation to plot: the slot layers here are {kinds}; importance needs a "
                "pulse_managed layer (StateManager) and a slot budget a pulse_adaptive layer (allocator)."
            )
        fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.4 + 2.8 * len(shown)), squeeze=False)
        for ax, layer in zip(axes[:, 0], shown, strict=True):
            module = dict((p, m) for _, p, m in self.layers)[layer.path]
            if layer.importance is not None:
                manager = module.manager
                ax.bar(manager.active_slots, layer.importance.numpy(), color="tab:blue")
                ax.set_ylim(0, 1)
                total = manager.max_slots
                ax.set_xlabel(f"slot index in the bank ({manager.num_active} of {total} active)")
                ax.set_ylabel(r"importance $\sigma(w_i)$")
                ax.set_title(f"{layer.title}: learned slot importance (read weight scale; prune drops low ones)")
            else:
                alloc = module.allocator
                lo, hi = alloc.min_slots, alloc.max_slots
                ax.plot(range(len(layer.budget)), layer.budget.numpy(), marker="o", label="budget of chunk j")
                ax.axhline(lo, color="gray", ls="--", label=f"min ({lo})")
                ax.axhline(hi, color="gray", ls=":", label=f"max ({hi})")
                ax.set_ylim(0, hi + 1)
                ax.set_xlabel(f"chunk j ({layer.chunk_size} tokens each; budget set from chunks < j)")
                ax.set_ylabel("slots in use")
                ax.set_title(f"{layer.title}: adaptive slot budget per chunk")
                ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        save_figure(fig, save_path)
        return fig


def _heatmap(fig: plt.Figure, ax: plt.Axes, values: Tensor, label: str, *, cmap: str, x0: int = 0,
             vmin: float | None = None, vmax: float | None = None) -> None:
    image = ax.imshow(values.numpy(), aspect="auto", cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax,
                      extent=(x0 - 0.5, x0 + values.shape[1] - 0.5, values.shape[0] - 0.5, -0.5))
    fig.colorbar(image, ax=ax, label=label, fraction=0.04)
    if values.shape[1] <= 24:
        ax.set_xticks(range(x0, x0 + values.shape[1]))


def _final_slots(out: Any, index: int) -> Tensor | None:
    """Slots (s, k) of layer `index` in a model output's state (after the last complete chunk), if it has them."""
    state = getattr(out, "state", None)
    if state is None and isinstance(out, tuple) and len(out) == 2:
        state = out[1]
    try:
        layer = state["layers"][index]
        h = DeltaSlotLayer.slots(layer) if "kv" in layer else layer["slots"]["h"]
    except (KeyError, IndexError, TypeError):
        return None
    return h[0].float().cpu() if isinstance(h, Tensor) and h.ndim == 3 else None


def _banks(states: Any) -> dict[str, Tensor]:
    if isinstance(states, Tensor):
        states = {"slots": states}
    elif isinstance(states, (list, tuple)):
        states = {f"bank {i}": s for i, s in enumerate(states)}
    if not isinstance(states, dict) or not states:
        raise PulseError("plot_state_similarity takes slots (slots, dim) or (batch, slots, dim), a list of them, "
                         "or a dict {name: slots} such as StateVisualizer.states(input_ids) returns.")
    banks = {}
    for name, bank in states.items():
        bank = torch.as_tensor(bank).detach().cpu()
        if bank.ndim == 3:
            bank = bank[0]
        if bank.ndim != 2:
            raise PulseError(f"slots `{name}` should be (slots, dim) or (batch, slots, dim), got {tuple(bank.shape)}.")
        banks[str(name)] = bank
    return banks
