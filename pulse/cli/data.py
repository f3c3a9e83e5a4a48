"""`pulse data prepare|inspect` (a text task's corpus, tokenized once) and `pulse tokenizer train`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, complete_recipe, console, handle_errors, make_table, open_cli_source
from pulse.errors import PulseError

data_app = typer.Typer(help="Prepare and inspect a text task's corpus (tokenized once, cached).",
                       no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
tokenizer_app = typer.Typer(help="Train a tokenizer on local files.", no_args_is_help=True,
                            context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")

RecipeArg = Annotated[Path, typer.Argument(help="A recipe (or run) whose [task] is kind text.",
                                           autocompletion=complete_recipe)]


def _text_source(recipe: Path, overrides: list[str] | None):
    source = open_cli_source(recipe, overrides)
    source.check_paths("task")
    spec = source.recipe
    if spec.task is None or spec.task.kind != "text":
        kind = spec.task.kind if spec.task is not None else "none"
        raise PulseError(f"{source.location}: its [task] is `{kind}`, not `text`; this reads the corpus of a text "
                         "task (see recipes/text-hybrid.toml).")
    return source


def _text_task(recipe: Path, overrides: list[str] | None):
    from pulse.tasks import task_of

    source = _text_source(recipe, overrides)
    return task_of(source.recipe, stored=source.stored_tokenizer())


class _Bar:
    """A rich progress bar over documents, with MB/s and ETA (plain lines when output is not a terminal)."""

    def __init__(self, what: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn(f"[bold]{what}[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("docs · {task.fields[rate]}"), TimeRemainingColumn(), console=console,
                                 transient=True)
        self.task = None
        self.started = time.perf_counter()

    def __call__(self, state: dict[str, Any]) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("docs", total=state.get("total"), rate="")
        rate = state.get("text_bytes", state.get("bytes", 0)) / 1e6 / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=state["documents"], rate=f"{rate:.1f} MB/s")

    def stop(self) -> float:
        if self.task is not None:
            self.progress.stop()
        return time.perf_counter() - self.started


def _show(info: dict[str, Any]) -> None:
    table = make_table(title=f"corpus: {info['corpus']}")
    table.add_column("", no_wrap=True)
    table.add_column("value", justify="right")
    rows = [("files", info["files"]), ("documents", info["documents"])]
    for split in ("train", "val"):
        if f"{split}_tokens" in info:
            rows.append(
                (f"{split}: documents / tokens", f"{info[f'{split}_documents']:,} / {info[f'{split}_tokens']:,}")
            )
    for key, label in (("text_bytes", "text bytes"), ("source_bytes", "bytes on disk"),
                       ("bytes_per_token", "bytes per token"), ("skipped_invalid_utf8", "skipped (not UTF-8)"),
                       ("split", "split by"), ("vocab_size", "tokenizer ids"), ("cache", "cache"),
                       ("cache_state", "cache state")):
        if key in info:
            value = info[key]
            rows.append((label, f"{value:.3f}" if isinstance(value, float) else value))
    for label, value in rows:
        table.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    if "key_covers" in info:
        console.print(f"the cache key covers {info['key_covers']}.", highlight=False)


@data_app.command()
@handle_errors
def prepare(recipe: RecipeArg, set_: SetOption = None) -> None:
    """Tokenize the corpus of a text recipe into its cache (reused while sources and tokenizer are unchanged)."""
    from pulse.data.corpus import inspect_corpus

    task = _text_task(recipe, set_)
    bar = _Bar("tokenizing")
    try:
        corpus = task.prepare(progress=bar, say=lambda text: console.print(f"[yellow]note:[/] {text}"))
    finally:
        elapsed = bar.stop()
    info = inspect_corpus(task.spec, task.tokenizer)
    if corpus.reused:
        console.print(f"the cache {corpus.root} is fresh; nothing to do")
    else:
        mb = (info.get("text_bytes") or 0) / 1e6
        console.print(f"prepared {corpus.root} in {elapsed:.1f} s ({mb / max(elapsed, 1e-9):.1f} MB/s of text)")
    _show(info)


@data_app.command(name="inspect")
@handle_errors
def inspect_(recipe: RecipeArg, set_: SetOption = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Documents, bytes, tokens, bytes per token, the split and the cache (and whether it is fresh)."""
    from pulse.data.corpus import inspect_corpus

    task = _text_task(recipe, set_)
    info = inspect_corpus(task.spec, task.tokenizer)
    if as_json:
        console.print_json(json.dumps(info))
    else:
        _show(info)


@tokenizer_app.command(name="train")
@handle_errors
def train_tokenizer(
    vocab_size: Annotated[int, typer.Option("--vocab-size", min=259, help="Ids in the tokenizer, specials included.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="A tokenizer .json file, or a folder for tokenizer.json.")],
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files, folders, globs or saved datasets to learn from.")
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            help="Learn from this text recipe's training split (its held-out documents stay unseen).",
            autocompletion=complete_recipe,
        ),
    ] = None,
    set_: SetOption = None,
    fmt: Annotated[Literal["auto", "text", "jsonl", "parquet", "dataset"], typer.Option(
        "--format", help="How to read PATHs (see task.format).")] = "auto",
    text_field: Annotated[str, typer.Option("--text-field", help="JSON field or column holding the text.")] = "text",
    min_frequency: Annotated[
        int, typer.Option("--min-frequency", min=1, help="Merges seen fewer times are dropped.")
    ] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Learn a byte-level BPE (specials <|bos|>, <|endoftext|>, <|pad|>) and write its tokenizer.json."""
    from pulse.data.bpe import train_bpe, write_tokenizer
    from pulse.paths import check_output_dir, check_output_file

    if not paths and recipe is None:
        raise PulseError("give the files to learn from (PATH…), or --recipe RECIPE to learn from its training split.")
    spec = _text_source(recipe, set_).recipe.task if recipe is not None else None
    (check_output_file if out.suffix == ".json" else check_output_dir)(out)
    target = out if out.suffix == ".json" else out / "tokenizer.json"
    if target.exists() and not force:
        raise PulseError(f"{target} already exists; pass --force to overwrite it, or give another --out.")
    bar = _Bar("reading")
    try:
        tok = train_bpe(paths or [], vocab_size=vocab_size, fmt=fmt, text_field=text_field,
                        min_frequency=min_frequency, progress=bar, spec=spec)
    finally:
        elapsed = bar.stop()
    written = write_tokenizer(tok, out)
    console.print(f"wrote {written}: byte-level BPE, {tok.vocab_size:,} ids, in {elapsed:.1f} s; use it with "
                  f"--set task.tokenizer={json.dumps(str(written))} (and model.vocab_size ≥ {tok.vocab_size})")
