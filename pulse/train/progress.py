"""What a person sees while training: a rich progress bar, eval lines, a one-screen summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pulse.train.loop import RunResult


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class RichReporter:
    """Progress bar (step, loss, metric, tokens/s, ETA), eval lines above it, a summary at the end."""

    def __init__(self, console: Console | None = None, *, live: bool = True):
        self.console = console or Console()
        self.live = live
        self.progress: Progress | None = None
        self.bar = None
        self.metric = "metric"

    def start(self, info: dict[str, Any]) -> None:
        self.metric = info["metric"]
        resumed = f" · resumed from step {info['resumed_from']}" if info["resumed_from"] is not None else ""
        world = f" × {info['world']} processes" if info["world"] > 1 else ""
        self.console.print(
            f"[bold]train[/] {info['recipe']} · model {info['model']} ({_fmt_count(info['params'])} params) · "
            f"task {info['task']} · {info['steps']} steps × batch {info['batch_size']} · {info['device']}{world} "
            f"→ {info['out_dir']}{resumed}",
            highlight=False,
        )
        if not self.live:
            return
        self.progress = Progress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[metric_name]} {task.fields[metric]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        start = info["resumed_from"] or 0
        self.bar = self.progress.add_task("train", total=info["steps"], completed=start, loss="—",
                                          metric_name=self.metric, metric="—", tps="—")
        self.progress.start()

    def step(self, step: int, values: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(self.bar, completed=step, loss=f"{values['loss']:.4f}",
                                 metric=f"{values[self.metric]:.4f}", tps=_fmt_count(values["tokens_per_s"]))

    def eval(self, record: dict[str, Any]) -> None:
        rest = " · ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("split", "step", "time"))
        self._print(f"[cyan]eval[/] step {record['step']} ({record['time']:.0f} s): {rest}")

    def message(self, text: str) -> None:
        self._print(f"[yellow]note[/] {text}")

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False)

    def finish(self, result: RunResult) -> None:
        if self.progress is not None:
            self.progress.stop()
        table = Table(title=f"run summary · {result.out_dir}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("steps", f"{result.step} / {result.steps} ({result.stopped})"
                      + (f", resumed from {result.resumed_from}" if result.resumed_from is not None else ""))
        table.add_row("wall time", f"{result.elapsed:.1f} s")
        overall = result.tokens / max(result.elapsed, 1e-9)
        table.add_row("tokens", f"{_fmt_count(result.tokens)} ({_fmt_count(overall)}/s overall, eval and saving included)")
        table.add_row("parameters", f"{result.params:,}")
        if result.train:
            table.add_row("train", " · ".join(f"{k} {_fmt(v)}" for k, v in result.train.items()
                                               if k in ("loss", result.metric)))
        table.add_row(f"eval {result.metric}", f"[bold green]{_fmt(result.eval.get(result.metric))}[/]"
                      + (" (higher is better)" if result.higher_is_better else " (lower is better)"))
        table.add_row("eval", " · ".join(f"{k} {_fmt(v)}" for k, v in result.eval.items() if k != result.metric))
        table.add_row("checkpoint", str(result.checkpoint))
        table.add_row("files", " · ".join([*(p.name for p in result.plots), "metrics.jsonl", "summary.json"]))
        self.console.print(table)
