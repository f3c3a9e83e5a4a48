"""`pulse eval RUN --passkey 1k,4k,16k --depths 0,0.5,1`: passkey retrieval over lengths × depths.

Any language model is scored, whatever it was trained on, with its own tokenizer (the one stored
beside its weights, else the one its recipe names: `Source.tokenizer`); a passkey run's own task
settings (digits, seed) are kept. Every length's memory is projected first from the model's cost
formulas (pulse.evaluation.cost) and a length that would not fit is refused; a length whose time,
at the rate measured on this machine, passes `max_seconds` is skipped with the reason.

Written: RUN/passkey.json and RUN/passkey.png (a heatmap: length × depth → exact-match accuracy).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pulse.errors import PulseError
from pulse.evaluation.cost import Cost, Pace, check_depths, check_memory, check_options, cost

PASSKEY_BATCH = 4  # passkey rows per forward


def passkey_eval(source: Any, lengths: str | list[int], depths: str | list[float] = "0,0.25,0.5,0.75,1", *,
                 trials: int = 5, max_seconds: float = 600.0,
                 device: str = "cpu", say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Passkey accuracy over lengths × depths for any language model (its own tokenizer; a passkey run's digits)."""
    from pulse.specs.tasks import PasskeySpec
    from pulse.tasks.passkey import Passkey, grid_keys, passkey_grid

    lengths = check_options("--passkey", lengths, max_seconds, trials=trials)  # as written ("1k,4k") or a list
    depths = check_depths(depths)
    source.require_weights("the passkey grid")
    model = source.build(device=device).eval()
    spec = source.recipe.task if getattr(source.recipe.task, "kind", None) == "passkey" else PasskeySpec()
    task = Passkey(spec, tokenizer=source.tokenizer)  # the model's own tokenizer, whatever it was trained on
    task.check_model(model)
    lengths = sorted(set(lengths))
    shortest = max(task.shortest(key) for key in grid_keys(task, trials))
    if lengths[0] < shortest:
        raise PulseError(f"--passkey: T={lengths[0]:,} is too short: with this model's tokenizer a passkey example "
                         f"(the key sentence, the question and the answer) takes {shortest:,} tokens before any "
                         f"filler; give lengths of at least {shortest:,}.")
    batch = min(trials, PASSKEY_BATCH)
    repeats = len(depths) * -(-trials // batch)  # forwards of `batch` rows per length

    def project(n: int) -> Cost:  # a batch of rows is built in Python lists first, with a few copies of one row
        return cost(model, n, batch=batch, logits=False, host_tokens=(batch + 4) * (n + 1))

    costs = check_memory(project, lengths, option="--passkey", device=device,
                         change=f"give shorter lengths{' (a batch is up to 4 --trials)' if batch > 1 else ''}")
    cells, skipped, guesses, pace = [], [], [], Pace(model, lengths[-1], device)
    for c in costs:
        guesses.append({"length": c.length, **pace.projected(c, repeats)})
        reason = pace.over(c, repeats, max_seconds)
        if reason is not None:
            skipped.append({"length": c.length, "reason": reason})
            say(f"T={c.length:,}: skipped — {reason}")
            continue
        began = time.perf_counter()
        row = passkey_grid(model, task, [c.length], depths, trials=trials, batch_size=batch)
        guesses[-1]["took_seconds"] = time.perf_counter() - began
        pace.record(c, repeats, guesses[-1]["took_seconds"])
        cells += row
        say(f"T={c.length:,}: " + " ".join(f"d={cell['depth']:g} {cell['accuracy']:.2f}" for cell in row))
    return {"checkpoint": source.describe(), "train_seq_len": getattr(source.recipe.task, "seq_len", None),
            "trials": trials, "depths": depths, "cells": cells, "skipped": skipped, "projected": guesses}


def write_passkey(doc: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """passkey.json and passkey.png (a heatmap: length × depth → accuracy) in `folder`."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pulse.paths import atomic_write, atomic_write_text

    data = folder / "passkey.json"
    atomic_write_text(data, json.dumps(doc, indent=2) + "\n")
    lengths = sorted({c["length"] for c in doc["cells"]})
    grid = np.full((len(doc["depths"]), max(len(lengths), 1)), np.nan)  # every length skipped: one empty column
    for c in doc["cells"]:
        grid[doc["depths"].index(c["depth"]), lengths.index(c["length"])] = c["accuracy"]
    fig = Figure(figsize=(1.2 + 0.9 * max(len(lengths), 1), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths], fontsize=8)
    ax.set_yticks(range(len(doc["depths"])), [f"{d:g}" for d in doc["depths"]], fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth of the key")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="exact-match accuracy")
    ax.set_title(f"passkey · {doc['checkpoint']}", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    png = folder / "passkey.png"
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return data, png
