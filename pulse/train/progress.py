"""What a person sees while training: a rich progress bar on a terminal, a plain line every
N steps otherwise (a log file, CI), eval lines, and a one-screen summary."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pulse.train.result import RunResult
from pulse.units import fmt_count


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_duration(seconds: float) -> str:
    """3725 → "1h02m05s", 65 → "1m05s", 4.2 → "4s"."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class RichReporter:
    """Progress bar (step, loss, metric, tokens/s, ETA), eval lines above it, a summary at the end.

    live=None picks by the console: a bar on a terminal, else (output redirected to a file
    or a pipe) a plain line every `every` steps and at the last step:
    `step 200/1000 · loss 1.2345 · accuracy 0.5000 · 12.3k tok/s · elapsed 1m05s · ETA 4m20s`.
    The ETA is the steps left times the mean time per step since this process started, or the time
    train.max_time leaves, whichever is sooner.
    """

    def __init__(self, console: Console | None = None, *, live: bool | None = True, every: int = 10,
                 quiet: bool = False):
        self.console = console or Console()
        self.live = (self.console.is_terminal if live is None else live) and not quiet
        self.plain = not self.live and not quiet
        self.every = max(1, every)
        self.progress: Progress | None = None
        self.bar = None
        self.metric = "metric"
        self.steps = 0
        self.first_step = 0
        self.clock = time.perf_counter()
        self.max_time: float | None = None
        self.elapsed0 = 0.0

    def start(self, info: dict[str, Any]) -> None:
        self.metric = info["metric"]
        self.steps = info["steps"]
        self.first_step = info["resumed_from"] or 0
        self.clock = time.perf_counter()
        self.max_time, self.elapsed0 = info.get("max_time"), info.get("elapsed", 0.0)
        resumed = f" · resumed from step {info['resumed_from']}" if info["resumed_from"] is not None else ""
        started = info.get("init_from")
        if started is not None and info["resumed_from"] is None:
            at = f" (step {started['step']})" if started.get("step") is not None else ""
            resumed += f" · weights from {started['from']}{at}"
        world = f" × {info['world']} processes" if info["world"] > 1 else ""
        self.console.print(
            f"[bold]train[/] {info['recipe']} · model {info['model']} ({fmt_count(info['params'])} params) · "
            f"task {info['task']} · {info['steps']} steps × batch {info['batch_size']} · {info['device']}{world} "
            f"→ {info['out_dir']}{resumed}",
            highlight=False,
        )
        if not self.live:
            return
        # below 100 columns the bar and the elapsed time give way, so the numbers are never cut
        wide = self.console.width >= 100
        self.progress = Progress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            *([BarColumn(bar_width=20)] if wide else []),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[metric_name]} {task.fields[metric]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            *([TimeElapsedColumn()] if wide else []),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
        )
        start = info["resumed_from"] or 0
        self.bar = self.progress.add_task("train", total=info["steps"], completed=start, loss="—",
                                          metric_name=self.metric, metric="—", tps="—", eta="?")
        self.progress.start()

    def step(self, step: int, values: dict[str, float]) -> None:
        if self.plain and (step % self.every == 0 or step == self.steps):
            self.console.print(self.plain_line(step, values, time.perf_counter() - self.clock), highlight=False,
                               markup=False, soft_wrap=True)
            self.console.file.flush()
        if self.progress is not None:
            eta = self.eta(step, time.perf_counter() - self.clock)
            self.progress.update(self.bar, completed=step, loss=f"{values['loss']:.4f}",
                                 metric=f"{values[self.metric]:.4f}", tps=fmt_count(values["tokens_per_s"]),
                                 eta="?" if eta is None else fmt_duration(eta))

    def eta(self, step: int, elapsed: float) -> float | None:
        """Seconds left: the steps left at the mean pace so far, or what train.max_time leaves, if sooner."""
        done = step - self.first_step
        eta = elapsed / done * (self.steps - step) if done > 0 else None
        if self.max_time is not None:
            left = max(self.max_time - self.elapsed0 - elapsed, 0.0)
            eta = left if eta is None else min(eta, left)
        return eta

    def plain_line(self, step: int, values: dict[str, float], elapsed: float) -> str:
        eta = self.eta(step, elapsed)
        return (f"step {step}/{self.steps} · loss {values['loss']:.4f} · {self.metric} {values[self.metric]:.4f} · "
                f"{fmt_count(values['tokens_per_s'])} tok/s · elapsed {fmt_duration(elapsed)} · "
                f"ETA {'?' if eta is None else fmt_duration(eta)}")

    def eval(self, record: dict[str, Any]) -> None:
        rest = " · ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("split", "step", "time"))
        self._print(f"[cyan]eval[/] step {record['step']} ({record['time']:.0f} s): {rest}")

    def message(self, text: str) -> None:
        self._print(f"[yellow]note[/] {text}")

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False)

    def close(self) -> None:
        """Take the bar down (a run that stops early, at a signal, has no summary)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, result: RunResult) -> None:
        self.close()
        table = Table(title=f"run summary · {result.out_dir}", title_justify="left", show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("steps", f"{result.step} / {result.steps} ({result.stopped})"
                      + (f", resumed from {result.resumed_from}" if result.resumed_from is not None else ""))
        table.add_row("wall time", f"{result.elapsed:.1f} s")
        overall = result.tokens / max(result.elapsed, 1e-9)
        table.add_row(
            "tokens", f"{fmt_count(result.tokens)} ({fmt_count(overall)}/s overall, eval and saving included)"
        )
        table.add_row("parameters", f"{result.params:,}")
        if result.train:
            table.add_row("train", " · ".join(f"{k} {_fmt(v)}" for k, v in result.train.items()
                                               if k in ("loss", result.metric)))
        table.add_row(f"eval {result.metric}", f"[bold green]{_fmt(result.eval.get(result.metric))}[/]"
                      + (" (higher is better)" if result.higher_is_better else " (lower is better)"))
        table.add_row("eval", " · ".join(f"{k} {_fmt(v)}" for k, v in result.eval.items() if k != result.metric))
        if result.init_from is not None:
            table.add_row("started from", f"{result.init_from['from']} ({result.init_from['weights']})")
        table.add_row("checkpoint", str(result.checkpoint))
        table.add_row("files", " · ".join([*(p.name for p in result.plots), "metrics.jsonl", "summary.json"]))
        self.console.print(table)
