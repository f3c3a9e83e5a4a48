"""`pulse train`: train a recipe on its task (`pulse eval` is in pulse.cli.eval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, complete_recipe, console, handle_errors, open_cli_source


@app.command(aliases=("--config", "--model"))
@handle_errors
def train(
    recipe: Annotated[
        Path, typer.Argument(help="A recipe (.toml) or shipped recipe name, or a run directory to continue.",
                             autocompletion=complete_recipe),
    ],
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "--output-dir", help="Run directory (default: runs/<recipe name>).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the run directory's newest checkpoint (fail if there is none); "
                                      "changed settings of the train table are applied."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="If --out holds another run, move it aside to OUT.replaced-<time> first."),
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Fine-tune: start from this run's (or checkpoint's) weights; "
                                    "same as --set train.init_from=RUN."),
    ] = None,
    print_every: Annotated[
        int | None,
        typer.Option("--print-every", min=1, help="When output is not a terminal, print a progress line every N "
                                                  "steps (default: the recipe's train.log_every)."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or lines; eval lines and the summary only.")
    ] = False,
    allow_unverified: Annotated[
        bool,
        typer.Option("--allow-unverified", help="Start --init from weights that lack their checksum or recipe hash."),
    ] = False,
) -> None:
    """Train a recipe on its task table: progress bar, metrics.jsonl, plots, checkpoints, exact resume.

    Rerunning into the same directory continues exactly where the newest checkpoint left off; a
    directory holding another run is refused unless --resume (new [train] settings) or --force.
    With output redirected, a plain line every N steps gives step, loss, tokens/s and ETA.
    Under `torchrun --nproc-per-node N --no-python pulse train …` it trains with DDP.
    """
    from pulse.runtime import ddp
    from pulse.train import train as run_training
    from pulse.train.progress import RichReporter

    overrides = [*(set_ or []), *([f"train.init_from={json.dumps(str(init))}"] if init is not None else [])]
    source = open_cli_source(recipe, overrides)
    source.check_paths("task")  # training reads the task's data
    spec = source.recipe
    # a recipe trains into runs/<its name>; a run (or checkpoint directory) continues where it is
    out_dir = out or (Path("runs") / source.location.stem if source.origin == "recipe" else source.folder)
    reporter = RichReporter(console, live=None, every=print_every or spec.train.log_every, quiet=quiet)
    run_training(spec, out_dir, resume=resume, force=force, reporter=reporter, allow_unverified=allow_unverified)
    if ddp.world_size() > 1:
        ddp.exit_worker(0)
