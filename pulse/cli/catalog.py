"""`pulse list` and `pulse cp`: what kinds and zoo cards exist, and a copy of one to edit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from pulse.cli.app import app
from pulse.cli.common import console, handle_errors, make_table
from pulse.errors import PulseError
from pulse.registry import Role
from pulse.units import fmt_count


def _short(value) -> str:
    """A default in a few characters: a spec by its kind, a table of specs as {name: kind}."""
    if hasattr(value, "kind"):
        return str(value.kind)
    if isinstance(value, dict) and all(isinstance(v, dict) and "kind" in v for v in value.values()):
        return "{" + ", ".join(f"{k}: {v['kind']}" for k, v in value.items()) + "}"
    if isinstance(value, dict) and value.keys() == {"kind"}:
        return str(value["kind"])
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "…"


def _kind_in_full(kind: str) -> None:
    from pulse.specs.describe import REQUIRED, describe

    info = describe(kind)
    console.print(f"[bold]{info.kind}[/] ({info.role}) · defined in {info.defined_in}\n{escape(info.doc)}\n",
                  highlight=False)
    table = make_table("parameter", "type", "default", "meaning")
    table.columns[0].no_wrap = True
    for column in table.columns[1:]:
        column.overflow = "fold"
    for p in info.parameters:
        table.add_row(p.name, p.type, p.default if p.default == REQUIRED else json.dumps(p.default, default=str),
                      p.description)
    console.print(table)


def _card_in_full(card) -> None:
    console.print(f"[bold]{card.name}[/] (zoo card, model kind {card.kind}, {card.params:,} parameters)\n"
                  f"{escape(card.description)}\n[dim]{card.path}[/]\n")
    console.print(Syntax(card.path.read_text(encoding="utf-8"), "toml", word_wrap=True))
    console.print(f"use it: [bold]pulse build {card.name}[/] · [bold]pulse cp {card.name} my-model.toml[/] to edit · "
                  f'in a recipe: [model] from = "{card.name}"', highlight=False)


def _kinds_table(entries) -> Table:
    from pulse.specs.recipe import spec_class

    table = make_table("kind", "role", "parameters (defaults)", "description", title="registered kinds")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    table.columns[2].overflow = table.columns[3].overflow = "fold"  # a long key=value folds, never cut
    for entry in entries:
        fields = [f"{n}={'required' if f.is_required() else _short(f.get_default(call_default_factory=True))}"
                  for n, f in spec_class(entry.kind).model_fields.items() if n != "kind"]
        table.add_row(entry.kind, entry.role, ", ".join(fields), entry.doc)
    return table


def _cards_table(cards) -> Table:
    table = make_table("card", "params", "description", title="zoo cards (use by name: pulse build NAME)")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    table.columns[1].justify = "right"
    for card in cards:
        table.add_row(card.name, fmt_count(card.params), card.description)
    return table


@app.command(name="list")
@handle_errors
def list_(
    pattern: Annotated[str, typer.Argument(help="A kind or card name, or a glob such as '*attention*'.")] = "*",
    role: Annotated[
        Role | None, typer.Option(help="Only kinds of this role; hides cards."),
    ] = None,
    cards: Annotated[
        bool, typer.Option("--cards", help="Only zoo cards (named models), e.g. --cards '*hybrid*'.")
    ] = False,
    kinds: Annotated[bool, typer.Option("--kinds", help="Only registered kinds.")] = False,
) -> None:
    """List registered kinds and zoo cards; name one kind or card to see it in full."""
    from pulse import registry
    from pulse.api.cards import list_cards

    entries = [] if cards else registry.entries(pattern, role)
    found = [] if kinds or role else list_cards(pattern)
    if not entries and not found:
        what = "zoo card" if cards else "registered kind" if kinds or role else "registered kind or zoo card"
        raise PulseError(f"no {what} matches `{pattern}`; run `pulse list` to see them all.")
    if len(entries) == 1 and entries[0].kind == pattern and not found:
        _kind_in_full(entries[0].kind)
        return
    if len(found) == 1 and found[0].name == pattern and not entries:
        _card_in_full(found[0])
        return
    if entries:
        console.print(_kinds_table(entries))
    if found:
        console.print(_cards_table(found))


@app.command(name="cp")
@handle_errors
def cp(
    name: Annotated[str, typer.Argument(help="A zoo card (pulse list --cards) or shipped recipe name.")],
    dest: Annotated[Path, typer.Argument(help="Where to write the copy (a .toml file or a directory).")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite DEST if it exists.")] = False,
) -> None:
    """Copy a zoo card or shipped recipe to a file you can edit (comments kept), like torchtune's `tune cp`."""
    from pulse.api.cards import copy_recipe

    if not dest.exists() and dest.suffix != ".toml":
        raise PulseError(f"{dest} does not exist, and without a .toml suffix it is neither a recipe file to write nor "
                         f"a folder to write into; give e.g. {dest.with_suffix('.toml')}, or create the folder first.")
    if not dest.is_dir() and not dest.parent.exists():
        raise PulseError(f"{dest.parent} does not exist; create it first (mkdir -p {dest.parent}), or give a path in "
                         "a folder that exists.")
    source, written = copy_recipe(name, dest, force=force)
    console.print(f"copied {source.name} to [bold]{written}[/]; edit it, then `pulse build {written}`", highlight=False)
