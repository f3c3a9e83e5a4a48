"""The workers of `pulse sweep --parallel N`: N points train at once, each in its own process.

Each worker is `python -m pulse.experiments.sweep_workers RECIPE OUT [--resume] --set …`, the
same load-and-train as `pulse train`, pinned to cpus // N threads (OMP_NUM_THREADS) and
writing its output to OUT/train.log; a PulseError ends it with `error: …` there and
exit status 2. Ctrl-C or SIGTERM to the sweep stops its running workers before it exits,
and their newest checkpoints are where a rerun continues.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pulse.errors import PulseError


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resume_point(point: Any) -> bool:
    """Whether the point's run directory has a checkpoint to continue from (train with resume=True)."""
    from pulse.storage.rundir import RunDir

    return bool(RunDir(point.out_dir, writer=False).complete())


def _command(recipe_path: Path, point: Any, overrides: Sequence[str]) -> list[str]:
    sets = [arg for o in [*overrides, *point.overrides] for arg in ("--set", o)]
    return [sys.executable, "-m", "pulse.experiments.sweep_workers", str(recipe_path), str(point.out_dir),
            *(["--resume"] if resume_point(point) else []), *sets]


class _Interrupts:
    """The handler of Ctrl-C and SIGTERM while workers run: both end the sweep with KeyboardInterrupt,
    so the workers are stopped, not orphaned. While a worker is being started (`deferred`), the
    signal waits until the worker is on the list of running ones: raised inside Popen, it would
    leave a started worker that nothing stops."""

    def __init__(self) -> None:
        self.deferring = self.pending = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.deferring:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts() -> Iterator[_Interrupts]:
    """Install `_Interrupts` for SIGINT and SIGTERM (in the main thread; elsewhere signals are not ours to set)."""
    handler = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_parallel(recipe_path: Path, points: Sequence[Any], overrides: Sequence[str], workers: int,
                 on_done: Callable[[Any, str | None], None], say: Callable[[str], None] = print) -> None:
    """Train the points `workers` at a time, in subprocesses of cpus // workers threads; log in <point>/train.log."""
    threads = str(max(1, cpus() // workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    queue, running = list(points), []
    with _interrupts() as interrupts:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    point = queue.pop(0)
                    point.out_dir.mkdir(parents=True, exist_ok=True)
                    with interrupts.deferred(), open(point.out_dir / "train.log", "w", encoding="utf-8") as log:
                        proc = subprocess.Popen(_command(recipe_path, point, overrides), stdout=log,
                                                stderr=subprocess.STDOUT, env=env)
                        running.append((point, proc))
                    say(f"{point.name}: training in a worker ({threads} threads), log in {point.out_dir / 'train.log'}")
                time.sleep(0.2)
                for point, proc in [r for r in running if r[1].poll() is not None]:
                    running.remove((point, proc))
                    code = proc.returncode
                    on_done(point, None if code == 0 else _log_error(point.out_dir / "train.log", code))
        finally:
            for _, proc in running:
                proc.terminate()
                proc.wait()


def _log_error(log: Path, code: int) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    at = text.rfind("error: ")
    if at >= 0:
        return " ".join(text[at + len("error: "):].split())
    tail = text.strip().splitlines()[-1:] or ["no output"]
    return f"the worker exited with status {code}: {tail[0]} (see {log})"


def main(argv: Sequence[str] | None = None) -> int:
    """The worker of `pulse sweep --parallel`: train one point, print a PulseError as `error: …`, exit 2."""
    from rich.console import Console

    from pulse.specs.load import load_recipe
    from pulse.train.loop import train
    from pulse.train.progress import RichReporter

    parser = argparse.ArgumentParser(prog="python -m pulse.experiments.sweep_workers", description=main.__doc__)
    parser.add_argument("recipe")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        reporter = RichReporter(Console(width=120), live=False, every=recipe.train.log_every)
        train(recipe, args.out, resume=args.resume, reporter=reporter)
    except PulseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # stopped by a signal; a run saves a checkpoint first (pulse.train.stop)
        print(f"interrupted: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
