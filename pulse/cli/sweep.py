"""`pulse sweep`: train one recipe at every point of a grid of overrides, and tabulate the results."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pulse.cli.app import app
from pulse.cli.common import SetOption, complete_recipe, console, handle_errors, make_table
from pulse.units import fmt_count


@app.command(aliases=("--config",))
@handle_errors
def sweep(
    recipe: Annotated[
        Path, typer.Argument(help="A recipe (.toml) or shipped recipe name; it needs a task table.",
                             autocompletion=complete_recipe),
    ],
    grid: Annotated[
        list[str],
        typer.Option("--grid", help="DOTTED.PATH=V1,V2,… (repeatable; the points are the cartesian product), "
                                    "e.g. --grid train.lr=3e-4,1e-3,3e-3."),
    ],
    set_: SetOption = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Train N points at once, as N processes "
                                                                    "sharing the CPU threads.")] = 1,
    out: Annotated[
        Path | None, typer.Option("--out", help="Sweep directory (default: runs/sweep-<recipe name>).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or lines; eval lines and summaries only.")
    ] = False,
) -> None:
    """Train RECIPE at every grid point (one run directory each), then print and save the table of results.

    Every point is validated before anything runs. A rerun skips finished points and resumes
    unfinished ones from their checkpoints. Writes OUT/sweep.json and OUT/sweep.md.
    """
    from pulse.experiments.sweep import sweep as run_sweep
    from pulse.experiments.sweep_report import row_cells
    from pulse.train.progress import RichReporter

    result = run_sweep(
        recipe, grid, overrides=set_ or [], out=out, parallel=parallel,
        reporter=lambda point: RichReporter(console, live=None, every=point.recipe.train.log_every, quiet=quiet),
        say=lambda text: console.print(f"[bold]sweep[/] {escape(text)}", highlight=False),
        command=shlex.join(["pulse", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else None,
    )
    direction = "higher" if result.higher_is_better else "lower"
    table = make_table(title=f"sweep · {result.root} · {result.metric}, {direction} is better · state: recurrent "
                             "elements per sequence")
    table.add_column("point")
    for name in [result.metric, "steps", "time", "params", "state"]:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", overflow="ellipsis", no_wrap=True, min_width=7)
    for row in result.rows:
        cells = row_cells(row)
        cells[3] = fmt_count(row["params"])
        cells[4] = fmt_count(row["state_elements"])
        best = row["name"] == result.best
        table.add_row(("★ " if best else "") + row["name"], *cells,
                      style="bold green" if best else ("red" if row["status"] == "failed" else ""))
    console.print(table)
    best = result.best or "none (no point finished)"
    console.print(f"best: [bold green]{best}[/] · {result.json_path} · {result.md_path}", highlight=False)
    if result.best is None:
        raise typer.Exit(1)
