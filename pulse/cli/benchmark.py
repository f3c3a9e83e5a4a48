"""`pulse benchmark`: a recipe (and baselines) trained and scored on every task of the LRA or bAbI suite."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pulse.cli.app import app
from pulse.cli.common import SetOption, complete_recipe, console, handle_errors, make_table
from pulse.errors import PulseError


def _data(values: list[str]) -> dict[str, str]:
    data = {}
    for text in values:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise PulseError(f"--data `{text}`: expected TASK=PATH, e.g. --data text=data/aclImdb.")
        data[name.strip()] = path.strip()
    return data


def _lrs(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise PulseError(f"--lr `{text}`: expected learning rates separated by commas, e.g. --lr 1e-3,3e-3.") from None


@app.command(aliases=("--config", "--model"))
@handle_errors
def benchmark(
    recipe: Annotated[Path, typer.Argument(help="The recipe (or run) whose model is benchmarked.",
                                           autocompletion=complete_recipe)],
    task: Annotated[str, typer.Option("--task", help="The suite: lra or babi.")],
    vs: Annotated[list[Path] | None, typer.Option("--vs", help="A baseline recipe (repeatable).")] = None,
    budget: Annotated[float, typer.Option("--budget", help="Scale every task's steps (1 = the suite's budget).")] = 1.0,
    lr: Annotated[str | None, typer.Option("--lr", help="Learning rates to try, e.g. 1e-3,3e-3; the best one per "
                                                        "task is reported (default: the recipe's).")] = None,
    only: Annotated[str | None, typer.Option("--only", help="Run only these tasks of the suite, e.g. "
                                                            "listops,pathfinder.")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="TASK=PATH: local files for a task "
                                                                  "(repeatable), e.g. text=data/aclImdb.")] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: "
                                                           "runs/benchmark-<suite>-<recipe name>).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or lines.")] = False,
) -> None:
    """Train RECIPE (and each --vs) on every task of a suite; one table, benchmark.json/.md/.png.

    Each model is refitted to each task (vocabulary, input and output widths); every run is a
    run directory, so a rerun skips finished runs and resumes the rest. --set NAME.task.x=v sets
    one task's field (NAME a suite task), --set train.x=v every run's.
    """
    from pulse.experiments.suites import benchmark as run_benchmark
    from pulse.train.progress import RichReporter

    doc = run_benchmark(
        [recipe, *(vs or [])], task, budget=budget, lrs=_lrs(lr), only=[t for t in (only or "").split(",") if t],
        data=_data(data or []), overrides=set_ or [], out=out,
        reporter=lambda point: RichReporter(console, live=None, every=point.recipe.train.log_every, quiet=quiet),
        say=lambda text: console.print(f"[bold]benchmark[/] {escape(text)}", highlight=False),
        command=shlex.join(["pulse", *sys.argv[1:]]) if sys.argv[1:2] == ["benchmark"] else None,
    )
    console.print(f"[bold]{doc['suite']}[/] suite · budget {doc['budget']:g} · held-out accuracy, best lr per task")
    table = make_table()
    table.add_column("task")
    for system in doc["systems"]:
        table.add_column(system, justify="right")
    for name in doc["tasks"]:
        cells = {c["system"]: c for c in doc["cells"] if c["task"] == name}
        table.add_row(name, *(_short(cells[s]) for s in doc["systems"]))
    table.add_section()
    table.add_row("[bold]average[/]", *(_average(doc["average"][s]) for s in doc["systems"]))
    console.print(table)
    console.print(" · ".join(doc["paths"]), highlight=False)


def _short(cell: dict) -> str:
    if cell["skipped"]:
        return f"[dim]{escape(cell['skipped'])}[/]"
    if cell["best"] is None:
        return "[red]failed[/]" if any(r["status"] == "failed" for r in cell["runs"]) else "—"
    return f"{cell['best']['value']:.4f}"


def _average(a: dict) -> str:
    return "—" if a["value"] is None else f"[bold]{a['value']:.4f}[/]" + ("" if a["complete"] else f" ({a['tasks']})")
