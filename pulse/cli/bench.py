"""`pulse bench`: time recipes or single mixers across sequence lengths, side by side."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pulse.cli.app import app
from pulse.cli.common import SetOption, console, err_console, handle_errors, open_cli_source
from pulse.errors import PulseError


def _vs_paths(recipe: Any, recipe_path: Path) -> list[Path]:
    """The recipe's own [bench] vs list, each relative to the recipe file (else to the working directory)."""
    out = []
    for name in recipe.bench.vs:
        here = recipe_path.parent / name
        out.append(here if here.exists() else Path(name))
    return out


def _describe(run: dict[str, Any]) -> str:
    where = f"T={run['seq_len']} round {run['round'] + 1} {run['system']}"
    if run["status"] == "ok":
        times = sorted(run["times_s"])
        per = "token" if run["unit"] == "token" else "batch"
        return f"[dim]{where}: {times[len(times) // 2] * 1e3:.3g} ms/{per} (pid {run['pid']})[/]"
    return f"[dim]{where}: [yellow]{run['status']}[/] — {run['reason']}[/]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown until the first measurements"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class _Progress:
    """A rich progress bar with the projected time left on a terminal; plain lines with the ETA otherwise."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.total, self.pending = total, None
        self.bar = None
        if console.is_terminal:
            self.bar = Progress(TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=console, transient=True)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def eta(self, done: int, total: int, seconds: float | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=f"ETA {_duration(seconds)}")
        elif self.pending is not None:
            left = f"ETA {_duration(seconds)}" if done < total else "done"
            console.print(f"{self.pending} [dim]· {done}/{total} · {left}[/]", highlight=False)
            self.pending = None

    def run(self, run: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.console.print(_describe(run), highlight=False)
        else:
            # printed by the eta() call that follows, with the updated count and time left
            self.pending = _describe(run)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _plan(systems: list[Any], settings: Any) -> str:
    """What will be measured, how many processes that is, and the worst case it may take."""
    count = len(systems) * len(settings.seq_lens) * settings.rounds
    bound = count * settings.timeout + (settings.timeout if settings.matmul_size else 0)
    if settings.max_seconds is not None:
        bound = min(bound, settings.max_seconds)
    return (f"plan: {len(systems)} system(s) × {len(settings.seq_lens)} length(s) × {settings.rounds} round(s) = "
            f"{count} measuring processes ({settings.warmup} warm-up + {settings.repeats} timed runs each)"
            f"{' + 1 matmul process' if settings.matmul_size else ''}; ETA unknown until the first measurements, "
            f"at most {_duration(bound)} (--timeout {settings.timeout:g} s per process"
            f"{f', --max-seconds {settings.max_seconds:g}' if settings.max_seconds is not None else ''}); "
            "lengths projected past --timeout or the memory cap are skipped")


def _command(recipe: Path | None, vs: list[str], mixers: list[str], dim: int, sets: list[str], settings: Any,
             compile_: str = "auto", docs: str = "0") -> str:
    """The command line that repeats this run, every setting spelled out."""
    words = ["pulse", "bench"] + ([str(recipe)] if recipe else [])
    words += [w for p in vs for w in ("--vs", p)] + [w for m in mixers for w in ("--mixer", m)]
    words += ["--dim", str(dim)] if mixers else []
    words += settings.flags()
    words += [] if compile_ == "auto" else ["--compile", compile_]
    words += [] if docs == "0" else ["--docs-per-window", docs]
    words += [w for s in sets for w in ("--set", s)]
    return shlex.join(words)


@app.command(aliases=("--config", "--model"))
@handle_errors
def bench(
    recipe: Annotated[
        Path | None, typer.Argument(help="The baseline recipe (.toml) or checkpoint; omit with --mixer.")
    ] = None,
    vs: Annotated[
        list[Path] | None, typer.Option("--vs", help="Another recipe to compare with the first (repeatable).")
    ] = None,
    mixer: Annotated[
        list[str] | None,
        typer.Option("--mixer", help="Bench single mixers instead of recipes: KIND or KIND:key=value,key=value "
                                     "(repeatable; the first is the baseline), e.g. --mixer pulse:gate=mingru."),
    ] = None,
    dim: Annotated[int, typer.Option(min=1, help="Model width for --mixer.")] = 256,
    seq_lens: Annotated[
        str | None, typer.Option("--seq-lens", help="Comma-separated lengths, e.g. 512,1k,4k (k = 1024, m = 1024²).")
    ] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Batch size.")] = None,
    mode: Annotated[
        Literal["forward", "train", "generate"] | None,
        typer.Option(help="forward, train (forward+backward+AdamW) or generate (per new token)."),
    ] = None,
    repeats: Annotated[int | None, typer.Option(min=1, help="Timed repeats per process, after warm-up.")] = None,
    warmup: Annotated[int | None, typer.Option(min=0, help="Untimed runs before the repeats.")] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Fresh processes per (system, length), interleaved.")
    ] = None,
    generate_tokens: Annotated[
        int | None, typer.Option("--generate-tokens", min=1, help="New tokens timed per repeat (generate).")
    ] = None,
    dtype: Annotated[
        Literal["float32", "float64", "bfloat16", "float16"] | None, typer.Option(help="The measured dtype.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads in each measuring process (default: the CPUs free "
                                 "when it starts; PULSE_THREADS / OMP_NUM_THREADS also set it).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0, help="Wall-clock budget of the whole run.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Seconds one measuring process may take.")] = None,
    max_memory: Annotated[
        float | None,
        typer.Option("--max-memory", min=0, help="GiB one measurement may allocate; beyond it the length is skipped."),
    ] = None,
    matmul_size: Annotated[
        int,
        typer.Option(
            "--matmul-size", min=0, help="Side of the square matmul that sets the FLOP/s ceiling (0: skip it)."
        ),
    ] = 2048,
    fit_from: Annotated[
        int | None, typer.Option("--fit-from", min=1, help="Fit the scaling exponent on lengths ≥ this.")
    ] = None,
    compile_: Annotated[
        Literal["auto", "on", "off", "both"],
        typer.Option(
            "--compile",
            help="Compiled step functions (pulse.ops.backend): auto (PULSE_COMPILE; "
            "CUDA only by default), on, off, or both: every system eager and compiled, side by side.",
        ),
    ] = "auto",
    guard: Annotated[
        bool,
        typer.Option(
            "--guard/--no-guard",
            help="Skip lengths projected past --timeout or the memory cap "
            "(--max-memory, else half the RAM) before trying them.",
        ),
    ] = True,
    docs_per_window: Annotated[
        str,
        typer.Option("--docs-per-window", help="Documents packed per window, every layer starting afresh at each "
                                               "(doc_starts); comma-separated counts are timed side by side, "
                                               "e.g. 0,16 (0: no boundaries)."),
    ] = "0",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full results as JSON here.")] = None,
    text_out: Annotated[
        Path | None, typer.Option("--text", help="Write the report as plain text, wide enough to be whole.")
    ] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="Write a log–log PNG of time and memory vs length here.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Tokens/s, ms per batch or per new token, peak memory and scaling exponent, each length in a fresh process."""
    from pulse.bench import Settings, mixer_system, recipe_system, report, run_bench, with_compile, with_documents
    from pulse.paths import check_output_files
    from pulse.specs.bench import BenchSpec

    check_output_files(json_out=json_out, plot_out=plot_out)
    if (recipe is None) == (not mixer):
        raise PulseError(
            "give a RECIPE (and optionally --vs OTHER …) or one or more --mixer KIND, not both and not neither."
        )
    if mixer:
        if vs or set_:
            raise PulseError("--vs and --set apply to recipes; with --mixer, write variants as KIND:key=value.")
        spec = BenchSpec()
        systems = [mixer_system(text, dim) for text in mixer]
    else:
        source = open_cli_source(recipe, set_)
        base = source.recipe
        spec = base.bench
        if not vs:
            source.check_paths("bench")  # bench.vs of a stored recipe is followed only if it stays inside
        others = vs if vs else _vs_paths(base, recipe)
        recipes = [base] + [open_cli_source(p, set_).recipe for p in others]
        systems = [recipe_system(r) for r in recipes]
        names = [s.name for s in systems]
        if len(set(names)) != len(names):
            systems = [recipe_system(r, f"{i}:{p.stem}") for i, (r, p) in enumerate(zip(recipes, [recipe, *others]))]
    systems = with_documents(with_compile(systems, compile_), _counts(docs_per_window))
    settings = Settings.from_spec(
        spec,
        seq_lens=seq_lens,
        batch=batch, mode=mode, repeats=repeats, warmup=warmup, rounds=rounds, generate_tokens=generate_tokens,
        dtype=dtype, device=device, threads=threads, max_seconds=max_seconds, timeout=timeout,
        max_memory_gb=max_memory, matmul_size=matmul_size, fit_from=fit_from, guard=guard,
    )
    command = _command(recipe, [str(p) for p in (vs or [])], mixer or [], dim, set_ or [], settings, compile_,
                       docs_per_window)
    console.print(f"[bold]pulse bench[/] {', '.join(s.name for s in systems)} · {settings.mode} · "
                  f"T = {', '.join(map(str, settings.seq_lens))} · one fresh process per measurement", highlight=False)
    console.print(_plan(systems, settings), highlight=False)
    from pulse.bench import plan

    busy = plan.load_warning()
    if busy:
        console.print(f"[yellow]warning:[/] {busy}", highlight=False)
    shown = _Progress(len(systems) * len(settings.seq_lens) * settings.rounds)
    try:
        doc = run_bench(systems, settings, progress=shown.run, eta=shown.eta, command=command)
    finally:
        shown.stop()
    report.render(doc, console)
    for out, write in ((text_out, report.write_text), (json_out, report.write_json), (plot_out, report.plot)):
        if out is not None:
            console.print(f"wrote {report.save_results(doc, out, write)}")
    failed = [r for r in doc["runs"] if r["status"] == "failed"]
    if failed:
        err_console.print(f"[red]{len(failed)} measurement(s) failed[/] (a bug, not a resource limit); "
                          f"first: {failed[0]['system']} at T={failed[0]['seq_len']}: {failed[0]['reason']}",
                          highlight=False)
        raise typer.Exit(1)


def _counts(text: str) -> list[int]:
    """--docs-per-window N[,M…] as integers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PulseError(f"--docs-per-window {text}: give whole numbers, e.g. 16 or 0,16.") from None
