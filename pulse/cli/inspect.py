"""`pulse build`, `summarize`, `list`, `validate`, `schema`: look at recipes and kinds."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from pulse.cli.app import app
from pulse.cli.common import (
    SetOption,
    console,
    err_console,
    fmt_bytes,
    fmt_count,
    handle_errors,
    load_recipe_or_checkpoint,
)
from pulse.errors import PulseError

RecipeArg = Annotated[Path, typer.Argument(help="A recipe (.toml), or a checkpoint directory.")]


def _tree(module, name: str, depth: int) -> Tree:
    params = sum(p.numel() for p in module.parameters())
    node = Tree(f"[bold]{name}[/] {type(module).__name__} [dim]{fmt_count(params)} params[/]")
    if depth > 0:
        for child_name, child in module.named_children():
            node.add(_tree(child, child_name, depth - 1))
    return node


def _cost_table(summary, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col, just in (("block", "left"), ("type", "left"), ("params", "right"), ("state", "right"),
                      ("FLOPs/token", "right")):
        table.add_column(col, justify=just)
    for b in summary.blocks:
        table.add_row(b.name, b.type, f"{b.params:,}", fmt_bytes(b.state_bytes) if b.state_bytes else "—",
                      fmt_count(b.flops_per_token) if b.flops_per_token else "—")
    table.add_section()
    table.add_row("[bold]total[/]", "", f"[bold]{summary.total_params:,}[/]", f"[bold]{fmt_bytes(summary.state_bytes)}[/]",
                  f"[bold]{fmt_count(summary.flops_per_token)}[/]")
    return table


@app.command()
@handle_errors
def build(
    recipe: RecipeArg,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write initialized weights + resolved recipe here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the initial weights written with --out.")] = 0,
    depth: Annotated[int, typer.Option(help="Levels of the module tree to print.")] = 2,
) -> None:
    """Validate a recipe, assemble the model, print its architecture and parameter counts."""
    import torch

    from pulse.assemble import build_model
    from pulse.checkpoint import save_checkpoint
    from pulse.summarize import block_costs

    spec = load_recipe_or_checkpoint(recipe, set_)
    torch.manual_seed(seed)
    model = build_model(spec, device=None if out else "meta")
    console.print(_tree(model, "model", depth))
    table = Table(title="parameters per block", title_justify="left")
    table.add_column("block")
    table.add_column("type")
    table.add_column("params", justify="right")
    rows = block_costs(model, seq_len=1)
    for row in rows:
        table.add_row(row.name, row.type, f"{row.params:,}")
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    table.add_section()
    table.add_row("[bold]total[/]", "", f"[bold]{total:,}[/]")
    console.print(table)
    console.print(f"recipe hash {spec.hash()[:16]} · {spec.source}")
    if out is not None:
        path = save_checkpoint(model, spec, out)
        console.print(f"wrote initialized weights (seed {seed}) to [bold]{path}[/] and the resolved recipe beside it")


@app.command()
@handle_errors
def summarize(
    recipe: RecipeArg,
    set_: SetOption = None,
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Sequence length for state size and FLOPs.")] = 1024,
    batch: Annotated[int, typer.Option(min=1, help="Batch size for state bytes and the torchinfo pass.")] = 1,
    depth: Annotated[int, typer.Option(help="Depth of the torchinfo table.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the costs as JSON instead of tables.")] = False,
) -> None:
    """Parameters, recurrent state size and FLOPs per token of each block (built on the meta device)."""
    from pulse.assemble import build_model
    from pulse.summarize import summarize as run_summary

    spec = load_recipe_or_checkpoint(recipe, set_)
    model = build_model(spec, device="meta")
    summary = run_summary(model, seq_len=seq_len, batch=batch, table=not as_json, depth=depth)
    if as_json:
        console.print_json(json.dumps(summary.to_dict()))
        return
    console.print(summary.table, highlight=False, markup=False)
    console.print(_cost_table(summary, f"cost at seq_len={seq_len}, batch={batch}, {summary.dtype}"))
    console.print(
        f"parameters {summary.total_params:,} · recurrent state {fmt_bytes(summary.state_bytes)} · "
        f"forward {fmt_count(summary.flops_per_token)}FLOP/token · "
        f"{fmt_count(summary.flops_per_token * seq_len * batch)}FLOP per batch"
    )


@app.command(name="list")
@handle_errors
def list_(
    pattern: Annotated[str, typer.Argument(help="A kind, or a glob such as '*attention*'.")] = "*",
    role: Annotated[str | None, typer.Option(help="Only kinds of this role (mixer, mlp, norm, positional, model, task).")] = None,
) -> None:
    """List registered kinds; name one kind to see all its parameters."""
    from pulse import registry
    from pulse.specs.describe import REQUIRED, describe
    from pulse.specs.recipe import spec_class

    entries = registry.entries(pattern, role)
    if not entries:
        raise PulseError(f"no registered kind matches `{pattern}`; run `pulse list` to see all kinds.")
    if len(entries) == 1 and entries[0].kind == pattern:
        info = describe(entries[0].kind)
        console.print(f"[bold]{info.kind}[/] ({info.role}) · defined in {info.defined_in}\n{escape(info.doc)}\n")
        table = Table("parameter", "type", "default", "meaning")
        for p in info.parameters:
            default = p.default if p.default == REQUIRED else json.dumps(p.default, default=str)
            table.add_row(p.name, p.type, default, p.description)
        console.print(table)
        return
    table = Table("kind", "role", "parameters", "description")
    for entry in entries:
        fields = [f"{n}={_short(f.get_default(call_default_factory=True))}"
                  for n, f in spec_class(entry.kind).model_fields.items() if n != "kind"]
        table.add_row(entry.kind, entry.role, ", ".join(fields), entry.doc)
    console.print(table)


def _short(value) -> str:
    if hasattr(value, "kind"):
        return str(value.kind)
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "…"


@app.command()
@handle_errors
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files to check.")],
    set_: SetOption = None,
) -> None:
    """Check recipes without building them; exit 2 if any is invalid."""
    failed = 0
    for path in recipes:
        try:
            spec = load_recipe_or_checkpoint(path, set_)
        except PulseError as err:
            failed += 1
            err_console.print(f"[red]✗[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]✓[/] {path} [dim]{spec.hash()[:12]}[/]")
    if failed:
        raise PulseError(f"{failed} of {len(recipes)} recipe(s) failed validation; fix the problems listed above.")


@app.command()
@handle_errors
def schema(
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON Schema here instead of stdout.")] = None,
) -> None:
    """Write the JSON Schema of the recipe format (for editor completion)."""
    from pulse.checkpoint import atomic_write_text
    from pulse.specs import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")
