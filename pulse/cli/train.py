"""`pulse train` and `pulse eval`: train a recipe on its task, score a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, complete_recipe, console, handle_errors, make_table, open_cli_source
from pulse.errors import PulseError


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
    where = source.location if source.location.is_dir() else source.location.parent
    out_dir = out or (Path("runs") / source.location.stem if source.origin == "recipe" else where)
    reporter = RichReporter(console, live=None, every=print_every or spec.train.log_every, quiet=quiet)
    run_training(spec, out_dir, resume=resume, force=force, reporter=reporter, allow_unverified=allow_unverified)
    if ddp.world_size() > 1:
        ddp.exit_worker(0)


def _task_table(value: str) -> dict:
    from pulse.specs.load import read_table

    path = Path(value)
    if path.suffix in (".toml", ".json") or path.exists():
        table = read_table(path)
        task = table.get("task", table)
        if not isinstance(task, dict) or "kind" not in task:
            raise PulseError(f"{path}: expected a [task] table with a `kind`, e.g. [task] kind = \"mqar\".")
        return task
    return {"kind": value}


@app.command(name="eval", aliases=("--model",))
@handle_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint or run directory (pulse train's --out).")],
    task: Annotated[
        str | None,
        typer.Option("--task", help="Evaluate on this task instead: a task kind, or a TOML file with a task table."),
    ] = None,
    set_: SetOption = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Evaluation batch size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Load a checkpoint that lacks its checksum or recipe hash."),
    ] = False,
    harness: Annotated[
        str | None, typer.Option("--harness", help="lm-evaluation-harness tasks, comma-separated (pulse_arith_mc, "
                                                   "pulse_continuation ship with PULSE); needs pulse[eval]."),
    ] = None,
    include_path: Annotated[
        Path | None, typer.Option("--include-path", help="--harness: a folder of task YAMLs.")
    ] = None,
    limit: Annotated[
        float | None, typer.Option("--limit", min=0, help="--harness: documents per task (or a share, < 1).")
    ] = None,
    num_fewshot: Annotated[
        int | None, typer.Option("--num-fewshot", min=0, help="--harness: examples in each prompt.")
    ] = None,
    online: Annotated[
        bool, typer.Option("--online", help="--harness: let tasks download their data from the Hub.")
    ] = False,
    context_curve: Annotated[
        str | None, typer.Option("--context-curve", help="Loss and bits per byte by position in windows of these "
                                                         "lengths (e.g. 256,1k,4k,16k): context past training."),
    ] = None,
    windows: Annotated[
        int | None, typer.Option("--windows", min=1, help="--context-curve: windows per length (default 16).")
    ] = None,
    passkey: Annotated[
        str | None, typer.Option("--passkey", help="Passkey retrieval accuracy at these lengths (e.g. 1k,4k) × "
                                                   "--depths: a heatmap."),
    ] = None,
    depths: Annotated[
        str | None, typer.Option("--depths", help="--passkey: depths of the key, 0 (start) … 1 (end); default "
                                                  "0,0.25,0.5,0.75,1.")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="--passkey: keys per cell (default 5).")] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0, help="--context-curve, --passkey: skip a length projected "
                                                                "to take longer (default 600).")
    ] = None,
) -> None:
    """Evaluate a checkpoint on its task's held-out set (or on another task with --task / --set task.…), or on
    lm-evaluation-harness tasks with --harness.

    Before --context-curve, --passkey or --harness runs, the memory of every length is projected from the
    model's own cost formulas, and a length that would not fit in the memory available is refused."""
    from pulse.evaluation import evaluate_checkpoint

    given = {"--windows": windows, "--depths": depths, "--trials": trials, "--max-seconds": max_seconds,
             "--include-path": include_path, "--limit": limit, "--num-fewshot": num_fewshot,
             "--online": online or None, "--task": task, "--batch-size": batch_size}
    mode = _eval_mode(passkey, context_curve, harness, {k for k, v in given.items() if v is not None})
    budget = 600.0 if max_seconds is None else max_seconds
    if mode == "--passkey":
        return _passkey(checkpoint, passkey, depths or "0,0.25,0.5,0.75,1", trials or 5, set_, budget,
                        allow_unverified, as_json)
    if mode == "--context-curve":
        return _context_curve(checkpoint, context_curve, task, set_, windows or 16, budget, allow_unverified,
                              as_json)
    if mode == "--harness":
        return _harness(checkpoint, harness, set_, include_path, _check_limit(limit), num_fewshot, batch_size or 1,
                        online, allow_unverified, as_json)
    result = evaluate_checkpoint(checkpoint, task=_task_table(task) if task else None, overrides=set_ or [],
                                 batch_size=batch_size, allow_unverified=allow_unverified)
    if as_json:
        console.print_json(json.dumps({"checkpoint": str(result.location),
                                       "task": result.recipe.task.model_dump(mode="json"),
                                       "metric": result.task.metric, "metrics": result.metrics}))
        return
    console.print(f"[dim]{result.location}[/]", highlight=False, soft_wrap=True)
    table = make_table(title=f"held-out {result.task.kind}")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        style = "bold green" if name == result.task.metric else ""
        table.add_row(name, f"[{style}]{value:.4f}[/]" if style else f"{value:.4f}")
    console.print(table)


# the options each evaluation reads (the held-out evaluation: --task and --batch-size)
_EVAL_OPTIONS = {"--passkey": {"--depths", "--trials", "--max-seconds"},
                 "--context-curve": {"--windows", "--max-seconds", "--task"},
                 "--harness": {"--include-path", "--limit", "--num-fewshot", "--online", "--batch-size"},
                 "": {"--task", "--batch-size"}}


def _eval_mode(passkey: str | None, curve: str | None, harness: str | None, given: set[str]) -> str:
    """Which evaluation `pulse eval` runs ("" for the held-out one); one at a time, and only its own options."""
    modes = [name for name, value in (("--passkey", passkey), ("--context-curve", curve), ("--harness", harness))
             if value is not None]
    if len(modes) > 1:
        raise PulseError(f"{' and '.join(modes)}: give one evaluation at a time (each writes its own files).")
    mode = modes[0] if modes else ""
    stray = sorted(given - _EVAL_OPTIONS[mode])
    if stray:
        owners = [m for m in _EVAL_OPTIONS if m and stray[0] in _EVAL_OPTIONS[m]]
        raise PulseError(f"{stray[0]} is an option of {' and '.join(owners)}, not of "
                         f"{mode or 'the held-out evaluation'}; drop it, or give {owners[0]}.")
    return mode


def _check_limit(limit: float | None) -> float | None:
    """--limit: a whole number of documents (1 or more), or a share of them (between 0 and 1)."""
    if limit is None or (0 < limit < 1) or (limit >= 1 and math.isfinite(limit) and limit == int(limit)):
        return limit
    raise PulseError(f"--limit {limit:g}: give a number of documents per task (a whole number, 1 or more) or a share "
                     "of them (above 0 and below 1, e.g. 0.1).")


def _harness(checkpoint: Path, tasks: str, overrides: list[str] | None, include_path: Path | None,
             limit: float | None, num_fewshot: int | None, batch_size: int, online: bool, allow_unverified: bool,
             as_json: bool) -> None:
    """`pulse eval RUN --harness …`: the harness table, and its JSON written into the run directory."""
    from pulse.api import PulseForCausalLM
    from pulse.evaluation.cost import HARNESS_LENGTH, check_memory, cost
    from pulse.evaluation.harness import local_tasks_dir, run_harness, table
    from pulse.paths import atomic_write_text

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise PulseError("--harness takes task names, e.g. --harness pulse_arith_mc,pulse_continuation.")
    source = open_cli_source(checkpoint, overrides, allow_unverified=allow_unverified)
    source.require_weights("--harness")
    lm = PulseForCausalLM.from_source(source).eval()
    check_memory(lambda rows: cost(lm.model, HARNESS_LENGTH, batch=rows), [batch_size], option="--harness",
                 device=str(next(lm.model.parameters()).device), varies="rows",
                 change=f"give a smaller --batch-size (the harness pads a batch to its longest request, up to "
                        f"{HARNESS_LENGTH:,} tokens)")
    results = run_harness(lm, names, include_path=include_path, limit=limit, num_fewshot=num_fewshot,
                          batch_size=batch_size, online=online)
    folder = source.location if source.location.is_dir() else source.location.parent
    out = folder / "harness" / f"{'+'.join(names)}.json"
    keep = {k: results[k] for k in ("results", "versions", "n-shot", "configs", "config") if k in results}
    atomic_write_text(out, json.dumps(keep, indent=2, sort_keys=True, default=str) + "\n")
    if as_json:
        console.print_json(json.dumps({"checkpoint": str(source.describe()), "results": results["results"],
                                       "written": str(out)}, default=str))
        return
    console.print(table(results), highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {out} · local tasks: {local_tasks_dir()} (for lm_eval --include_path)", highlight=False)


def _context_curve(checkpoint: Path, lengths: str, task: str | None, overrides: list[str] | None, windows: int,
                   max_seconds: float, allow_unverified: bool, as_json: bool) -> None:
    """`pulse eval RUN --context-curve …`: the table, and context-curve.json / .png in the run directory."""
    from pulse.cli.bench import parse_lengths
    from pulse.evaluation.context import context_curve, write_curve

    source = open_cli_source(checkpoint, overrides, allow_unverified=allow_unverified,
                             tables={"task": _task_table(task)} if task else None)
    doc = context_curve(source, parse_lengths(lengths, "--context-curve"), windows=windows,
                        max_seconds=max_seconds, say=lambda text: None if as_json else console.print(text))
    written = _write_beside(source, doc, write_curve, as_json)
    if written is None:
        return
    data, png = written
    table = make_table(title=f"context curve · {doc['checkpoint']} (trained at {doc['train_seq_len']:,})")
    for col in ("window", "bits/byte", "first bin", "last bin (from)", "state", "time"):
        table.add_column(col, justify="right", no_wrap=True)
    from pulse.units import fmt_bytes

    skipped = []
    for p in doc["points"]:
        if p["status"] != "ok":
            skipped.append(f"T={p['length']:,} skipped: {p['reason']}")
            table.add_row(f"{p['length']:,}", "skipped", "", "", fmt_bytes(p["state_bytes"]), "")
            continue
        first, last = p["bins"][0], p["bins"][-1]
        table.add_row(f"{p['length']:,}", f"{p['bpb']:.4f}", f"{first['bpb']:.4f}",
                      f"{last['bpb']:.4f} ({last['start']:,})", fmt_bytes(p["state_bytes"]), f"{p['seconds']:.0f} s")
    console.print(table)
    for line in skipped:
        console.print(line, highlight=False)
    console.print(f"wrote {data} and {png}", highlight=False)


def _passkey(checkpoint: Path, lengths: str, depths: str, trials: int, overrides: list[str] | None,
             max_seconds: float, allow_unverified: bool, as_json: bool) -> None:
    """`pulse eval RUN --passkey …`: the grid as a table, and passkey.json / .png in the run directory."""
    from pulse.cli.bench import parse_lengths
    from pulse.evaluation.context import passkey_eval, write_passkey

    try:
        at = list(dict.fromkeys(float(d) for d in depths.split(",") if d.strip()))  # each depth once, in order
    except ValueError:
        raise PulseError(f"--depths `{depths}`: write depths between 0 and 1, e.g. 0,0.5,1.") from None
    if not at or not all(0 <= d <= 1 for d in at):
        raise PulseError(f"--depths `{depths}`: write depths between 0 and 1, e.g. 0,0.5,1.")
    source = open_cli_source(checkpoint, overrides, allow_unverified=allow_unverified)
    doc = passkey_eval(source, parse_lengths(lengths, "--passkey"), at, trials=trials, max_seconds=max_seconds,
                       say=lambda text: None if as_json else console.print(text, highlight=False))
    written = _write_beside(source, doc, write_passkey, as_json)
    if written is None:
        return
    data, png = written
    table = make_table(title=f"passkey, exact match of {trials} keys per cell")
    table.add_column("depth", no_wrap=True)
    lengths_done = sorted({c["length"] for c in doc["cells"]})
    for n in lengths_done:
        table.add_column(f"{n:,}", justify="right", no_wrap=True)
    for d in at:
        table.add_row(f"{d:g}", *(f"{c['accuracy']:.2f}" for n in lengths_done for c in doc["cells"]
                                  if c["length"] == n and c["depth"] == d))
    console.print(table)
    for s in doc["skipped"]:
        console.print(f"T={s['length']:,} skipped: {s['reason']}", highlight=False)
    console.print(f"wrote {data} and {png}", highlight=False)


def _write_beside(source, doc: dict, write, as_json: bool) -> tuple[Path, Path] | None:
    """Write an evaluation's JSON and PNG into the run (or checkpoint) directory; with --json print it and
    return None, else return the paths for the table's last line."""
    folder = source.location if source.location.is_dir() else source.location.parent
    written = write(doc, folder)
    if as_json:
        console.print_json(json.dumps(doc))
        return None
    return written
