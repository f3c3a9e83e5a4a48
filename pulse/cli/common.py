"""Shared CLI plumbing: the consoles, the error handler, opening a source (pulse.api.source) for a command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pulse.errors import PulseError

console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value by dotted path, e.g. --set model.depth=6 (repeatable)."),
]
UnverifiedOption = Annotated[
    bool, typer.Option("--allow-unverified", help="Load a checkpoint that lacks its checksum or recipe hash."),
]


def complete_recipe(incomplete: str) -> list[str]:
    """Shell completion for a RECIPE argument: zoo card and shipped recipe names (files complete as usual)."""
    from pulse.specs.load import card_names, recipe_names

    return sorted(n for n in {*card_names(), *recipe_names()} if n.startswith(incomplete))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a PulseError as one paragraph on stderr and exit 2; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PulseError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as err:  # a training run's stop says where it saved and how to go on
            err_console.print(f"[yellow]interrupted[/]{': ' + escape(str(err)) if str(err) else ''}", soft_wrap=True)
            raise typer.Exit(getattr(err, "exit_code", 130)) from None
        except OSError as err:
            from pulse.paths import full_disk

            if not full_disk(err):
                raise
            where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
            err_console.print(f"[bold red]error:[/] no space left on the device{where}; files this command writes "
                              "are written whole or not at all. Free some space and run it again.",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def open_cli_source(path: Path | str, overrides: list[str] | None = None, *, allow_unverified: bool = False,
                    tables: dict | None = None):
    """pulse.api.open_source for a command: the same Source, with its notes (a skipped damaged checkpoint) said."""
    from pulse.api.source import open_source

    source = open_source(path, overrides or (), tables=tables, allow_unverified=allow_unverified)
    for note in source.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    return source


def open_lm(path: Path | str, overrides: list[str] | None, seed: int, allow_unverified: bool = False):
    """A PulseForCausalLM in eval mode: a checkpoint's or run's weights, or fresh ones (seeded) for a recipe."""
    import torch

    from pulse.api import PulseForCausalLM

    source = open_cli_source(path, overrides, allow_unverified=allow_unverified)
    torch.manual_seed(seed)
    model = PulseForCausalLM.from_source(source).eval()
    if not source.trained:
        err_console.print(f"[yellow]note:[/] {escape(str(source.location))} is a recipe: freshly initialized weights "
                          f"(seed {seed}), not trained; expect noise. Give a run directory for trained weights.",
                          highlight=False)
    return model


def make_table(*columns: str, title: str | None = None, **kwargs: Any) -> Table:
    """A rich table that spends few columns on borders, so the pulse tables fit 80 columns."""
    return Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, **kwargs)


def flush() -> None:
    sys.stdout.flush()
