"""`pulse eval task|harness|context|passkey RUN …`: score a checkpoint; the flags of old are the same sub-commands.

`pulse eval RUN` is `pulse eval task RUN`; `pulse eval RUN --harness T`, `--context-curve L` and `--passkey L`
are `pulse eval harness RUN T`, `context RUN L` and `passkey RUN L`, with the same options, output and files.
A first argument that names a sub-command is that sub-command, even where a path of that name exists here:
`pulse eval ./task` (or `pulse eval task ./task`) evaluates a run directory called `task`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pulse.cli.app import PulseTyper, app
from pulse.cli.common import console, handle_errors, make_table, open_cli_source
from pulse.errors import PulseError

# the flag that selected each sub-command before it was one ("": the held-out evaluation, the default)
FLAGS = {"passkey": "--passkey", "context": "--context-curve", "harness": "--harness", "task": ""}
COMMON = {"--set", "--json", "--allow-unverified", "--model"}  # options every sub-command has


def _own(command: Any) -> set[str]:
    """The options of a sub-command that are its own (not one of COMMON)."""
    return {o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")} - COMMON


def _given(args: list[str], known: set[str]) -> set[str]:
    """The options among `known` that appear in `args` (before a `--`), as `--name value` or `--name=value`."""
    end = args.index("--") if "--" in args else len(args)
    return {a.partition("=")[0] for a in args[:end] if a.partition("=")[0] in known}


def _check_options(name: str, args: list[str], commands: dict[str, Any], label: dict[str, str]) -> None:
    """A sub-command's options are its own: another's is named with the sub-command (or flag) it belongs to."""
    own = {n: _own(c) for n, c in commands.items()}
    stray = sorted(_given(args, set().union(*own.values())) - own[name])
    if not stray:
        return
    owners = [label[n] for n in FLAGS if label[n] and stray[0] in own[n]]
    raise PulseError(f"{stray[0]} is an option of {' and '.join(owners)}, not of "
                     f"{label[name] or 'the held-out evaluation'}; drop it, or give {owners[0]}.")


def _check_clash(name: str, args: list[str], command: Any) -> None:
    """`pulse eval task` where ./task exists and no RUN follows: say that the sub-command won, and how to name
    the path."""
    takes_value = {o for p in command.params if p.param_type_name == "option" and not p.is_flag for o in p.opts}
    positional, i = 0, 0
    while i < len(args):
        if args[i] == "--":
            positional += len(args) - i - 1
            break
        positional += not args[i].startswith("-")
        i += 2 if args[i] in takes_value else 1
    if positional == 0 and Path(name).exists():
        raise PulseError(f"`{name}` names the sub-command `pulse eval {name}` and also a path here; the sub-command "
                         f"wins. To evaluate the path, write it as ./{name}: `pulse eval ./{name}` (or "
                         f"`pulse eval {name} ./{name} …`).")


@handle_errors
def route(args: list[str], commands: dict[str, Any]) -> list[str]:
    """`pulse eval`'s arguments as a sub-command's: the flags form (`RUN --passkey 1k,4k`) rewritten as
    `passkey RUN -- 1k,4k`, with the old checks (one evaluation at a time, only its own options)."""
    if args[0] in commands:
        _check_clash(args[0], args[1:], commands[args[0]])
        _check_options(args[0], args[1:], commands, {n: f"`pulse eval {n}`" for n in FLAGS})
        return args
    end = args.index("--") if "--" in args else len(args)
    chosen, rest, i = {}, [], 0
    while i < end:
        name, eq, value = args[i].partition("=")
        mode = next((m for m, flag in FLAGS.items() if flag and flag == name), None)
        if mode is not None:
            if not eq and i + 1 >= end:
                raise PulseError(f"{name} needs a value: {name} {'TASKS' if mode == 'harness' else 'LENGTHS'}.")
            chosen[mode] = value if eq else args[i + 1]
            i += 1 if eq else 2
            continue
        rest.append(args[i])
        i += 1
    modes = [m for m in FLAGS if m in chosen]
    if len(modes) > 1:
        raise PulseError(f"{' and '.join(FLAGS[m] for m in modes)}: give one evaluation at a time (each writes "
                         "its own files).")
    mode = modes[0] if modes else "task"
    _check_options(mode, rest, commands, FLAGS)
    if not modes:
        return ["task", *rest, *args[end:]]
    # the value goes after `--`, so that a value that looks like an option (-5) stays the value it was
    return [mode, *rest, *(args[end:] + [chosen[mode]] if end < len(args) else ["--", chosen[mode]])]


class EvalGroup(TyperGroup):
    """`pulse eval`: the sub-commands, and the flags form routed to them (see `route`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in ctx.help_option_names:
            args = route(list(args), self.commands)
        return super().parse_args(ctx, args)


eval_app = PulseTyper(
    cls=EvalGroup, no_args_is_help=True,
    short_help="Evaluate a checkpoint: its task (task), lm-evaluation-harness (harness), context past training "
               "(context), passkey retrieval (passkey).",
    help="Evaluate a checkpoint: on its task's held-out set (task), on lm-evaluation-harness tasks (harness), "
         "by position past the training length (context) or by passkey retrieval (passkey). The flags of old "
         "still work: `pulse eval RUN` is `pulse eval task RUN`; `pulse eval RUN --harness T`, `--context-curve L` "
         "and `--passkey L` are `pulse eval harness RUN T`, `context RUN L` and `passkey RUN L`. Before context, "
         "passkey or harness runs, the memory of every length is projected from the model's own cost formulas, "
         "and a length that would not fit in the memory available is refused. A sub-command's name wins over a "
         "path of that name: write ./task for a run directory called task.")
app.add_typer(eval_app, name="eval")

Run = Annotated[Path, typer.Argument(metavar="RUN", help="A checkpoint or run directory (pulse train's --out).")]
Lengths = Annotated[
    str, typer.Argument(metavar="LENGTHS", help="Lengths, comma-separated, e.g. 256,1k,4k (k = 1024, m = 1024²).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value by dotted path, e.g. --set task.seq_len=64 (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
UnverifiedOption = Annotated[
    bool, typer.Option("--allow-unverified", help="Load a checkpoint that lacks its checksum or recipe hash."),
]
TaskOption = Annotated[
    str | None,
    typer.Option("--task", help="Evaluate on this task instead: a task kind, or a TOML file with a task table."),
]
MaxSeconds = Annotated[
    float | None, typer.Option("--max-seconds", min=0, help="Skip a length projected to take longer (default 600).")
]


def task_table(value: str) -> dict:
    """--task: a task kind, or a TOML/JSON file holding a [task] table (or the table itself)."""
    from pulse.specs.load import read_table

    path = Path(value)
    if path.suffix in (".toml", ".json") or path.exists():
        table = read_table(path)
        task = table.get("task", table)
        if not isinstance(task, dict) or "kind" not in task:
            raise PulseError(f"{path}: expected a [task] table with a `kind`, e.g. [task] kind = \"mqar\".")
        return task
    return {"kind": value}


@eval_app.command("task", aliases=("--model",))
@handle_errors
def task(
    checkpoint: Run,
    other_task: TaskOption = None,
    set_: SetOption = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Evaluation batch size.")] = None,
    as_json: JsonOption = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """A checkpoint on its task's held-out set, or on another with --task / --set task.… (`pulse eval RUN`)."""
    from pulse.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, task=task_table(other_task) if other_task else None,
                                 overrides=set_ or [], batch_size=batch_size, allow_unverified=allow_unverified)
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


def check_limit(limit: float | None) -> float | None:
    """--limit: a whole number of documents (1 or more), or a share of them (between 0 and 1)."""
    if limit is None or (0 < limit < 1) or (limit >= 1 and math.isfinite(limit) and limit == int(limit)):
        return limit
    raise PulseError(f"--limit {limit:g}: give a number of documents per task (a whole number, 1 or more) or a share "
                     "of them (above 0 and below 1, e.g. 0.1).")


@eval_app.command("harness", aliases=("--model",))
@handle_errors
def harness(
    checkpoint: Run,
    tasks: Annotated[str, typer.Argument(metavar="TASKS", help="lm-evaluation-harness tasks, comma-separated "
                                                               "(pulse_arith_mc, pulse_continuation ship with "
                                                               "PULSE); needs pulse[eval].")],
    set_: SetOption = None,
    include_path: Annotated[Path | None, typer.Option("--include-path", help="A folder of task YAMLs.")] = None,
    limit: Annotated[
        float | None, typer.Option("--limit", min=0, help="Documents per task (or a share, < 1).")
    ] = None,
    num_fewshot: Annotated[int | None, typer.Option("--num-fewshot", min=0, help="Examples in each prompt.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Requests per forward.")] = 1,
    online: Annotated[bool, typer.Option("--online", help="Let tasks download their data from the Hub.")] = False,
    as_json: JsonOption = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """lm-evaluation-harness tasks (`pulse eval RUN --harness TASKS`): a table, and RUN/harness/TASKS.json."""
    from pulse.api import PulseForCausalLM
    from pulse.evaluation.cost import check_harness_memory
    from pulse.evaluation.harness import local_tasks_dir, run_harness, table
    from pulse.paths import atomic_write_text

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise PulseError("--harness takes task names, e.g. --harness pulse_arith_mc,pulse_continuation.")
    limit = check_limit(limit)
    source = open_cli_source(checkpoint, set_, allow_unverified=allow_unverified)
    source.require_weights("--harness")
    lm = PulseForCausalLM.from_source(source).eval()
    check_harness_memory(lm.model, batch_size, device=str(next(lm.model.parameters()).device))
    results = run_harness(lm, names, include_path=include_path, limit=limit, num_fewshot=num_fewshot,
                          batch_size=batch_size, online=online)
    out = source.folder / "harness" / f"{'+'.join(names)}.json"
    keep = {k: results[k] for k in ("results", "versions", "n-shot", "configs", "config") if k in results}
    atomic_write_text(out, json.dumps(keep, indent=2, sort_keys=True, default=str) + "\n")
    if as_json:
        console.print_json(json.dumps({"checkpoint": str(source.describe()), "results": results["results"],
                                       "written": str(out)}, default=str))
        return
    console.print(table(results), highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {out} · local tasks: {local_tasks_dir()} (for lm_eval --include_path)", highlight=False)


def _given_only(**options: Any) -> dict[str, Any]:
    """The options the user gave (the library has the defaults of the others)."""
    return {k: v for k, v in options.items() if v is not None}


def _write_beside(source: Any, doc: dict, write: Any, as_json: bool) -> tuple[Path, Path] | None:
    """Write an evaluation's JSON and PNG beside the run or checkpoint (Source.folder); with --json print it and
    return None, else return the paths for the table's last line."""
    written = write(doc, source.folder)
    if as_json:
        console.print_json(json.dumps(doc))
        return None
    return written


@eval_app.command("context", aliases=("--model",))
@handle_errors
def context(
    checkpoint: Run,
    lengths: Lengths,
    other_task: TaskOption = None,
    set_: SetOption = None,
    windows: Annotated[int | None, typer.Option("--windows", min=1, help="Windows per length (default 16).")] = None,
    max_seconds: MaxSeconds = None,
    as_json: JsonOption = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Bits per byte by position, past the training length (`pulse eval RUN --context-curve LENGTHS`).

    A table, and context-curve.json and .png in the run directory."""
    from pulse.evaluation.context import context_curve, write_curve
    from pulse.units import fmt_bytes

    source = open_cli_source(checkpoint, set_, allow_unverified=allow_unverified,
                             tables={"task": task_table(other_task)} if other_task else None)
    doc = context_curve(source, lengths, **_given_only(windows=windows, max_seconds=max_seconds),
                        say=lambda text: None if as_json else console.print(text))
    written = _write_beside(source, doc, write_curve, as_json)
    if written is None:
        return
    table = make_table(title=f"context curve · {doc['checkpoint']} (trained at {doc['train_seq_len']:,})")
    for col in ("window", "bits/byte", "first bin", "last bin (from)", "state", "time"):
        table.add_column(col, justify="right", no_wrap=True)
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
    console.print(f"wrote {written[0]} and {written[1]}", highlight=False)


@eval_app.command("passkey", aliases=("--model",))
@handle_errors
def passkey(
    checkpoint: Run,
    lengths: Lengths,
    set_: SetOption = None,
    depths: Annotated[
        str | None, typer.Option("--depths", help="Depths of the key, 0 (start) … 1 (end); default 0,0.25,0.5,0.75,1.")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Keys per cell (default 5).")] = None,
    max_seconds: MaxSeconds = None,
    as_json: JsonOption = False,
    allow_unverified: UnverifiedOption = False,
) -> None:
    """Passkey retrieval at these lengths × --depths (`pulse eval RUN --passkey LENGTHS`).

    A table, and passkey.json and passkey.png (a heatmap) in the run directory."""
    from pulse.evaluation.passkey import passkey_eval, write_passkey

    source = open_cli_source(checkpoint, set_, allow_unverified=allow_unverified)
    doc = passkey_eval(source, lengths, **_given_only(depths=depths, trials=trials, max_seconds=max_seconds),
                       say=lambda text: None if as_json else console.print(text, highlight=False))
    written = _write_beside(source, doc, write_passkey, as_json)
    if written is None:
        return
    table = make_table(title=f"passkey, exact match of {doc['trials']} keys per cell")
    table.add_column("depth", no_wrap=True)
    lengths_done = sorted({c["length"] for c in doc["cells"]})
    for n in lengths_done:
        table.add_column(f"{n:,}", justify="right", no_wrap=True)
    for d in doc["depths"]:
        table.add_row(f"{d:g}", *(f"{c['accuracy']:.2f}" for n in lengths_done for c in doc["cells"]
                                  if c["length"] == n and c["depth"] == d))
    console.print(table)
    for s in doc["skipped"]:
        console.print(f"T={s['length']:,} skipped: {s['reason']}", highlight=False)
    console.print(f"wrote {written[0]} and {written[1]}", highlight=False)
