"""`pulse viz`: state, routing and attention figures for a prompt, from a checkpoint or a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, UnverifiedOption, console, err_console, handle_errors, open_lm
from pulse.errors import PulseError

What = Literal["all", "states", "attention"]


@app.command(aliases=("--model",))
@handle_errors
def viz(
    source: Annotated[
        Path,
        typer.Argument(
            help="A run or checkpoint directory (or .safetensors file), or a recipe (.toml): fresh weights."
        ),
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to run through the model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the PNGs and the attention report.")],
    only: Annotated[What, typer.Option("--only", help="Which figures to draw.")] = "all",
    seed: Annotated[int, typer.Option(help="Seed for fresh weights from a recipe.")] = 0,
    set_: SetOption = None,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Draw slot dynamics, slot similarity, routing, slot allocation and an attention report (index.html)."""
    from pulse.visualization import AttentionVisualizer, StateVisualizer
    from pulse.visualization.common import describe_kinds

    model = open_lm(source, set_, seed, allow_unverified)
    if not prompt:
        raise PulseError("the prompt is empty; pass --prompt TEXT.")
    ids = model.tokenizer.encode(prompt)
    written: list[Path] = []
    if only in ("all", "states"):
        try:
            viz_ = StateVisualizer(model)
        except PulseError:
            if only == "states":
                raise
            err_console.print(f"[yellow]note:[/] no PULSE slot layers ({describe_kinds(model)}); no state figures.")
        else:
            written += _state_figures(viz_, ids, out)
    if only in ("all", "attention"):
        index = AttentionVisualizer(model).create_attention_report(ids, out / "attention")
        written += [index]
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def _state_figures(viz_, ids: list[int], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (
        ("states.png", lambda p: viz_.plot_state_dynamics(ids, save_path=p)),
        ("similarity.png", lambda p: viz_.plot_state_similarity(viz_.states(ids), save_path=p)),
        ("routing.png", lambda p: viz_.plot_routing(ids, save_path=p)),
        ("allocation.png", lambda p: viz_.plot_slot_allocation(ids, save_path=p)),
    ):
        try:
            plt.close(draw(out / name))
        except PulseError as err:
            if name in ("states.png", "similarity.png"):
                raise
            err_console.print(f"[yellow]note:[/] skipped {name}: {err}", highlight=False)
            continue
        written.append(out / name)
    return written
