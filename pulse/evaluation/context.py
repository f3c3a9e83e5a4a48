"""`pulse eval RUN --context-curve 256,1k,4k,16k`: quality by position in windows longer than the training length.

For each length L, `windows` windows of L + 1 tokens are taken evenly from the held-out
stream of the run's text task (read with the run's own tokenizer); each window is one
forward pass from the initial state, and every position's loss is kept. Positions are
binned on a log₂ scale ([0, 64), [64, 128), …, up to L) and each bin reports loss per token
and bits per byte (summed nats over the UTF-8 bytes of its targets, / ln 2): a model that
uses context gets better further in; one that fails past its training length gets worse
there. The recurrent state each length needs (attention: its KV cache) comes from the
blocks' own formulas, so a state model's flat memory shows beside it.

Before anything runs, every length's memory is projected from the model's own cost formulas
(pulse.evaluation.cost) and a length that would not fit in this machine's available memory
is refused. A length is skipped, with the reason, when the held-out text is shorter, or when
its time — its FLOPs (flops_per_token) at the rate measured on this machine, first on a short
trial forward, then on each length before it — passes `max_seconds`.

Written: RUN/context-curve.json and RUN/context-curve.png (bits per byte against position,
one line per length, the training length marked).

# b batch (1) · t time · v vocab
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pulse.errors import PulseError
from pulse.evaluation.cost import Pace, check_memory, check_options, cost


def bins_for(length: int) -> list[tuple[int, int]]:
    """[0, 64), [64, 128), [128, 256), … up to `length` (the last bin ends at it)."""
    edges = [0] + [e for e in (2**k for k in range(6, 40)) if e < length] + [length]
    return list(zip(edges[:-1], edges[1:]))


def context_curve(source: Any, lengths: str | list[int], *, windows: int = 16, max_seconds: float = 600.0,
                  device: str = "cpu", say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """The curve's figures for an opened source (a run or checkpoint of a text task)."""
    from pulse.tasks import task_of

    lengths = check_options("--context-curve", lengths, max_seconds, windows=windows)  # as written, or a list
    recipe = source.recipe
    if recipe.task is None or recipe.task.kind != "text":
        kind = recipe.task.kind if recipe.task is not None else "none"
        raise PulseError(f"{source.describe()}: its task is `{kind}`; the context curve reads held-out text, so give "
                         "a run of a text task, or --task FILE.toml with a [task] of kind text.")
    source.require_weights("the context curve")
    source.check_paths("task", unused=("task.tokenizer",) if source.stored_tokenizer() is not None else ())
    model = source.build(device=device).eval()
    task = task_of(recipe, stored=source.stored_tokenizer())  # the run's own tokenizer, where it saved one
    task.check_model(model)
    val = np.asarray(task.prepare().val)
    byte_len = torch.from_numpy(task.tokenizer.byte_lengths()).to(device)
    lengths = sorted(set(lengths))
    fits = [n for n in lengths if len(val) > n]  # the held-out text holds a window of n + 1 tokens
    costs = dict(zip(fits, check_memory(lambda n: cost(model, n), fits, option="--context-curve", device=device)))
    points, pace = [], Pace(model, max(fits, default=1), device)
    for length in lengths:
        count = min(windows, (len(val) - 1) // length)
        point: dict[str, Any] = {"length": length, "status": "skipped"}
        if length not in costs:
            point["reason"] = f"the held-out text has {len(val):,} tokens, fewer than {length + 1:,}"
        else:
            guess = pace.projected(costs[length], count)
            point["reason"] = pace.over(costs[length], count, max_seconds)
            if point["reason"] is None:
                point = _measure(model, val, byte_len, length, count, device, task.reset_token)
                pace.record(costs[length], count, point["seconds"])
            point["projected"] = guess
        point["state_bytes"] = int(cost(model, length).parts["state"])
        say(_line(point))
        points.append(point)
    return {"checkpoint": source.describe(), "train_seq_len": recipe.task.seq_len, "windows": windows,
            "tokenizer": task.tokenizer.digest(), "model": recipe.model.kind,
            "reset_at_eos": task.reset_token is not None, "points": points}


def _measure(model: torch.nn.Module, val: np.ndarray, byte_len: torch.Tensor, length: int, count: int, device: str,
             reset: int | None = None) -> dict[str, Any]:
    """`count` windows of `length` + 1 tokens taken evenly from `val`: every position's loss, binned."""
    available = (len(val) - 1) // length
    starts = [i * available // count * length for i in range(count)]
    nats = torch.zeros(length, dtype=torch.float64)
    nbytes = torch.zeros(length, dtype=torch.float64)
    began = time.perf_counter()
    with torch.no_grad():
        for s in starts:
            window = torch.from_numpy(val[s : s + length + 1].astype(np.int64)).to(device)
            ids = window[None, :-1]
            # as in training: with task.reset_at_eos every layer starts afresh at each eos
            logits, _ = model(ids, doc_starts=None if reset is None else ids == reset)  # (1, t, v)
            labels = window[1:]
            nats += F.cross_entropy(logits[0].float(), labels, reduction="none").double().cpu()
            nbytes += byte_len[labels].double().cpu()
            del logits
    seconds = time.perf_counter() - began
    bins = []
    for a, b in bins_for(length):
        n, by = float(nats[a:b].sum()), float(nbytes[a:b].sum())
        bins.append({"start": a, "end": b, "loss": n / (count * (b - a)), "bpb": n / max(by, 1.0) / math.log(2)})
    total = float(nats.sum())
    return {"length": length, "status": "ok", "windows": count, "seconds": seconds, "tokens_per_s": count * length
            / max(seconds, 1e-9), "loss": total / (count * length), "bpb": total / max(float(nbytes.sum()), 1.0)
            / math.log(2), "bins": bins}


def _line(point: dict[str, Any]) -> str:
    if point["status"] != "ok":
        return f"T={point['length']:,}: skipped — {point['reason']}"
    return (f"T={point['length']:,}: {point['bpb']:.4f} bits/byte over {point['windows']} window(s), last bin "
            f"{point['bins'][-1]['bpb']:.4f}, {point['seconds']:.1f} s")


def write_curve(doc: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """context-curve.json and context-curve.png in `folder` (each written atomically)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pulse.paths import atomic_write, atomic_write_text

    data = folder / "context-curve.json"
    atomic_write_text(data, json.dumps(doc, indent=2) + "\n")
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for p in doc["points"]:
        if p["status"] == "ok":
            ax.plot([(b["start"] + b["end"]) / 2 for b in p["bins"]], [b["bpb"] for b in p["bins"]], marker="o",
                    markersize=3, label=f"window {p['length']:,}")
    ax.axvline(doc["train_seq_len"], color="grey", linestyle="--", linewidth=1, label="training length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position in the window (tokens)")
    ax.set_ylabel("bits per byte (held-out)")
    ax.set_title(f"context curve · {doc['checkpoint']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    png = folder / "context-curve.png"
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return data, png
