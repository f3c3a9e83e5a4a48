"""`pulse build`, `summarize` (alias `info`), `validate`, `schema`: look at recipes and checkpoints."""

from __future__ import annotations

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
    UnverifiedOption,
    complete_recipe,
    console,
    err_console,
    handle_errors,
    make_table,
    open_cli_source,
)
from pulse.contract import count_params
from pulse.errors import PulseError
from pulse.units import fmt_bytes, fmt_count

SEED_SPELLINGS = ("--config", "--model")  # the original PULSE flags for the recipe or run argument
RecipeArg = Annotated[
    Path,
    typer.Argument(help="A recipe (.toml), a zoo card or shipped recipe name, or a run or checkpoint directory.",
                   autocompletion=complete_recipe),
]


def _shown(path: str) -> str:
    """A block's path as the tables show it: `layers.2.mixer` (the model's residual stack, `stack.`, implied)."""
    return path.removeprefix("stack.")


def _params_label(count) -> str:
    """"1.71M params", or "tied to embed.weight, 0 new params" for a module whose weights live elsewhere."""
    if count.tied_to and count.new_params == 0:
        return f"tied to {', '.join(count.tied_to)}, 0 new params"
    tied = f" (+ tied {', '.join(count.tied_to)})" if count.tied_to else ""
    return f"{fmt_count(count.new_params)} params{tied}"


def _tree(model, depth: int) -> Tree:
    from pulse.summarize import module_params

    counts = module_params(model)

    def node(module, path: str, name: str, level: int) -> Tree:
        branch = Tree(f"[bold]{escape(name)}[/] {type(module).__name__} [dim]{_params_label(counts[path])}[/]")
        if level < depth:
            for child_name, child in module.named_children():
                branch.add(node(child, f"{path}.{child_name}" if path else child_name, child_name, level + 1))
        return branch

    return node(model, "", "model", 0)


def _layer_table(summary) -> Table:
    table = make_table(title="layers (torchinfo walk of one forward pass)")
    table.add_column("layer", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("output", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    for row in summary.layers:
        params = "tied" if row.tied_to and row.new_params == 0 else f"{row.new_params:,}" if row.params else "—"
        table.add_row("  " * row.depth + row.name, row.type, "×".join(map(str, row.output_shape)) or "—", params)
    return table


def _cost_table(summary, title: str) -> Table:
    table = make_table(title=title)
    for col, just in (("block", "left"), ("type", "left"), ("params", "right"), ("state", "right"),
                      ("FLOPs/token", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for b in summary.blocks:
        params = "0 (tied)" if b.tied_to else f"{b.params:,}"
        table.add_row(_shown(b.name), b.type, params, fmt_bytes(b.state_bytes) if b.state_bytes else "—",
                      fmt_count(b.flops_per_token) if b.flops_per_token else "—")
    table.add_section()
    table.add_row("[bold]total[/]", "", f"[bold]{summary.total_params:,}[/]",
                  f"[bold]{fmt_bytes(summary.state_bytes)}[/]", f"[bold]{fmt_count(summary.flops_per_token)}[/]")
    return table


@app.command(aliases=SEED_SPELLINGS)
@handle_errors
def build(
    recipe: RecipeArg,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write initialized weights + resolved recipe here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the initial weights written with --out.")] = 0,
    depth: Annotated[int, typer.Option(help="Levels of the module tree to print.")] = 2,
    force: Annotated[
        bool, typer.Option("--force", help="If --out holds a run, move it aside to OUT.replaced-<time>.")
    ] = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Validate a recipe, assemble the model, print its architecture and parameter counts."""
    import torch

    from pulse.assemble import build_model
    from pulse.storage.checkpoint import save_checkpoint
    from pulse.storage.rundir import claim_output_dir, restore_output_dir
    from pulse.summarize import block_costs
    from pulse.tasks import reads_text

    source = open_cli_source(recipe, set_, allow_unverified=allow_unverified)
    spec = source.recipe
    aside = claim_output_dir(out, force=force, what="pulse build --out") if out is not None else None
    torch.manual_seed(seed)
    model = build_model(spec, device=None if out else "meta")
    console.print(_tree(model, depth))
    table = make_table(title="parameters per block (tied weights counted once)")
    table.add_column("block", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    rows = block_costs(model, seq_len=1)
    for row in rows:
        tied = f"0 (tied to {', '.join(map(_shown, row.tied_to))})" if row.tied_to else f"{row.params:,}"
        table.add_row(_shown(row.name), row.type, tied)
    total = count_params(model)
    table.add_section()
    table.add_row("[bold]total[/]", "", f"[bold]{total:,}[/]")
    console.print(table)
    console.print(f"recipe hash {spec.hash()[:16]} · {spec.source}")
    if out is not None:
        try:
            # a text task's tokenizer travels with the weights (a tokenizer.json, or the byte tokenizer's digest)
            tokenizer = source.tokenizer if spec.task is not None and reads_text(spec.task) else None
            path = save_checkpoint(model, spec, out, tokenizer=tokenizer)
        except BaseException as err:
            from pulse.paths import DiskFull, full_disk

            if isinstance(err, DiskFull) or full_disk(err):
                raise PulseError(
                    f"no space left on the device to write {out}; nothing was written there and "
                    f"{restore_output_dir(out, aside)}. Free some space and run the command again."
                ) from None
            restore_output_dir(out, aside)
            raise
        console.print(f"wrote initialized weights (seed {seed}) to [bold]{path}[/] and the resolved recipe beside it")


@app.command(name="info", hidden=True, help="Another name for `pulse summarize`.", aliases=SEED_SPELLINGS)
@app.command(aliases=SEED_SPELLINGS)
@handle_errors
def summarize(
    recipe: RecipeArg,
    set_: SetOption = None,
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Sequence length for state size and FLOPs.")] = 1024,
    batch: Annotated[int, typer.Option(min=1, help="Batch size for state bytes and the torchinfo pass.")] = 1,
    depth: Annotated[int, typer.Option(help="Depth of the torchinfo table.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the costs as JSON instead of tables.")] = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Parameters, recurrent state size and FLOPs per token of each block (built on the meta device)."""
    from pulse.assemble import build_model
    from pulse.summarize import summarize as run_summary

    spec = open_cli_source(recipe, set_, allow_unverified=allow_unverified).recipe
    model = build_model(spec, device="meta")
    summary = run_summary(model, seq_len=seq_len, batch=batch, table=not as_json, depth=depth)
    if as_json:
        console.print_json(json.dumps(summary.to_dict()))
        return
    if summary.layers:
        console.print(_layer_table(summary))
        console.print(f"Total params: {summary.total_params:,} (tied weights once) · trainable "
                      f"{summary.trainable_params:,} · mult-adds per batch {fmt_count(summary.mult_adds or 0)} "
                      "(torchinfo)", highlight=False)
    console.print(_cost_table(summary, f"cost at seq_len={seq_len}, batch={batch}, {summary.dtype}"))
    console.print(
        f"parameters {summary.total_params:,} · recurrent state {fmt_bytes(summary.state_bytes)} · "
        f"forward {fmt_count(summary.flops_per_token)}FLOP/token · "
        f"{fmt_count(summary.flops_per_token * seq_len * batch)}FLOP per batch",
        highlight=False,
    )


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
            spec = open_cli_source(path, set_).recipe
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
    from pulse.paths import atomic_write_text, check_output_file
    from pulse.specs import json_schema

    check_output_file(out)
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")
