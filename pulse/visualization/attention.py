"""Attention heatmaps: softmax attention layers (token → token) and PULSE slot reads (token → slot).

Both come from one forward under `capture`: attention layers report their probabilities
(b, h, t, t) and chunk-recurrent layers each token's attention on the slots (b, h, t, s).
`create_attention_report` writes one PNG per layer and head and an index.html showing them.

# h heads · t tokens · s slots
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.pulse.chunked import ChunkRecurrentMixer
from pulse.errors import PulseError
from pulse.paths import atomic_write_text
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


class AttentionVisualizer:
    """Heatmaps of who attends to what, for a model with attention and/or PULSE slot layers."""

    def __init__(self, model: nn.Module):
        self.model = model
        watched = (CausalSelfAttention, ChunkRecurrentMixer)
        self.layers = [(i, p, m) for i, p, m in mixers(model) if isinstance(m, watched)]
        if not self.layers:
            raise PulseError(
                f"{type(model).__name__} has no attention or PULSE slot layers (its layers: {describe_kinds(model)}); "
                "there are no attention weights to plot."
            )

    def attention(self, input_ids: Any) -> dict[str, Tensor]:
        """Batch row 0 of every watched layer over input_ids, by title: (h, t, t) token → token probabilities
        for attention layers, (h, t, s) token → slot probabilities for PULSE layers."""
        return {title: att for title, _, att in self._maps(as_ids(input_ids, self.model))}

    def _maps(self, ids: Tensor) -> list[tuple[str, bool, Tensor]]:
        """(title, reads slots, batch row 0 of the probabilities) per watched layer."""
        cap, _ = run_captured(self.model, ids)
        out = []
        for index, path, module in self.layers:
            slots = isinstance(module, ChunkRecurrentMixer)
            records = cap.get(path, "read" if slots else "attention")
            if records:
                out.append((f"layer {index} ({layer_kind(module)})", slots, records[0][0].float().cpu()))
        return out

    def plot_attention_heatmap(
        self,
        attention: Tensor,
        tokens: list[str] | None = None,
        save_path: str | Path | None = None,
        *,
        title: str | None = None,
        keys: list[str] | None = None,
        key_label: str = "key (earlier token read)",
    ) -> plt.Figure:
        """Heatmap of one attention matrix (queries × keys); (h, q, k) draws one panel per head, (b, h, q, k) row 0.

        tokens label the query axis (and the key axis when keys is None and the matrix is square);
        keys and key_label name the key axis otherwise (e.g. slots).
        """
        att = torch.as_tensor(attention).detach().float().cpu()
        if att.ndim == 4:
            att = att[0]
        if att.ndim == 2:
            att = att.unsqueeze(0)
        if att.ndim != 3:
            raise PulseError(f"attention should be (queries, keys), (heads, queries, keys) or (batch, heads, queries, "
                             f"keys), got {tuple(att.shape)}.")
        heads, q, k = att.shape
        if tokens is not None and len(tokens) != q:
            raise PulseError(f"got {len(tokens)} token labels for {q} query positions; pass one label per query.")
        keys = keys if keys is not None else (tokens if tokens is not None and q == k else None)
        cols = min(heads, 4)
        rows = -(-heads // cols)
        width, height = (min(max(3.5, 0.18 * n + 1.8), 14) for n in (k, q))
        fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.2, height * rows + 0.6), squeeze=False)
        for h, ax in enumerate(axes.flat):
            if h >= heads:
                ax.axis("off")
                continue
            image = ax.imshow(att[h].numpy(), cmap="viridis", vmin=0, vmax=float(att[h].max()) or 1.0,
                              aspect="auto", interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, label="attention probability")
            tick_tokens(ax, tokens, "y")
            tick_tokens(ax, keys, "x")
            ax.set_ylabel("query (token that reads)")
            ax.set_xlabel(key_label)
            if heads > 1:
                ax.set_title(f"head {h}")
        fig.suptitle(title or "Attention probabilities (each row sums to 1)")
        fig.tight_layout()
        save_figure(fig, save_path)
        return fig

    def create_attention_report(self, input_ids: Any, save_dir: str | Path) -> Path:
        """One PNG per watched layer and head under save_dir and save_dir/index.html showing them; returns the index."""
        ids = as_ids(input_ids, self.model)
        tokens = token_labels(ids[0].cpu(), self.model)
        maps = self._maps(ids)
        if not maps:
            raise PulseError("the forward recorded no attention weights; give a prompt of at least one token.")
        save_dir = Path(save_dir)
        sections = []
        for title, slots, att in maps:
            figures = []
            for h in range(att.shape[0]):
                name = f"{title.split(' (')[0].replace(' ', '')}_head{h}.png"
                what = "token → slot" if slots else "token → token"
                fig = self.plot_attention_heatmap(
                    att[h], tokens, save_dir / name,
                    title=f"{title}, head {h}: {what} attention probabilities"
                          + ("\n(the rest of each row goes to earlier tokens of the same chunk)" if slots else ""),
                    keys=[f"{i}" for i in range(att.shape[-1])] if slots else None,
                    key_label="slot read (as written by the chunks before the token's chunk)" if slots else
                    "key (earlier token read)",
                )
                plt.close(fig)
                figures.append((h, name))
            sections.append((title, "slots" if slots else "tokens", figures))
        index = save_dir / "index.html"
        atomic_write_text(index, _index_html(tokens, sections))
        return index


def _index_html(tokens: list[str], sections: list[tuple[str, str, list[tuple[int, str]]]]) -> str:
    prompt = html.escape("".join(" " if t == "␣" else t if len(t) == 1 else f"[{t}]" for t in tokens))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>PULSE attention report</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0 1em 1em 0}"
        "img{max-width:560px;border:1px solid #ccc}figcaption{font-size:90%;color:#444}</style></head><body>",
        "<h1>Attention report</h1>",
        f"<p>Prompt ({len(tokens)} tokens): <code>{prompt}</code></p>",
        "<p>Rows are the tokens that read (queries); columns are what they read: earlier tokens for attention "
        "layers, slots for PULSE layers (the slots as written by the chunks before the token's own chunk). "
        "Every row sums to 1 over tokens and slots together.</p>",
    ]
    for title, kind, figures in sections:
        parts.append(f"<h2>{html.escape(title)} — token → {kind}</h2>")
        for h, name in figures:
            parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(title)} head {h}'>"
                         f"<figcaption>{html.escape(title)}, head {h}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
