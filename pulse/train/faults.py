"""Deterministic fault injection for the tests of the non-finite stop and the stop signal; unset in normal use.

A real divergence (a huge learning rate) is a property of the machine's floating-point
arithmetic: the same recipe that reaches NaN in two steps on one CPU trains to the end on
another. Tests of what happens *after* a non-finite loss therefore inject it instead:

    PULSE_INJECT_NONFINITE="STEP"         the training loss of optimiser step STEP (1-based) is NaN
    PULSE_INJECT_NONFINITE="STEP@GLOB"    ... only in runs whose directory name matches GLOB

The loop then takes the path it takes for a real divergence (stop before applying the step,
keep the last good checkpoint, say how to go on) on every machine. The variable reaches
`pulse sweep`'s worker processes like any other.

    PULSE_INJECT_SIGNAL="STEP"            after optimiser step STEP, every process sends itself SIGTERM
    PULSE_INJECT_SIGNAL="STEP@RANK"       ... only the process of that rank (under torchrun)

so a test of the stop that saves (pulse.train.stop) knows the step, e.g. one rank signalled alone.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from pathlib import Path

from pulse.errors import PulseError

VARIABLE = "PULSE_INJECT_NONFINITE"
SIGNAL_VARIABLE = "PULSE_INJECT_SIGNAL"


def injected_step(run_root: Path) -> int | None:
    """The 1-based step whose loss is to be NaN in the run at `run_root`, or None."""
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return None
    step, _, glob = text.partition("@")
    if not step.isdigit() or int(step) < 1:
        raise PulseError(f"{VARIABLE}={text!r} is not STEP or STEP@GLOB with STEP a positive integer "
                         f"(e.g. {VARIABLE}=3 or {VARIABLE}='3@lr=1e3'); unset it for normal training.")
    if glob and not fnmatch.fnmatch(Path(run_root).name, glob):
        return None
    return int(step)


def loss_at(loss: float, step: int, injected: int | None) -> float:
    """`loss`, or NaN where `step` is the injected one."""
    return float("nan") if step == injected else loss


def signal_step(rank: int) -> int | None:
    """The optimiser step after which this rank sends itself SIGTERM (PULSE_INJECT_SIGNAL), or None."""
    text = os.environ.get(SIGNAL_VARIABLE, "").strip()
    if not text:
        return None
    step, _, only = text.partition("@")
    if not step.isdigit() or int(step) < 1 or (only and not only.isdigit()):
        raise PulseError(f"{SIGNAL_VARIABLE}={text!r} is not STEP or STEP@RANK with STEP a positive integer (e.g. "
                         f"{SIGNAL_VARIABLE}=3 or {SIGNAL_VARIABLE}=3@1); unset it for normal training.")
    return int(step) if not only or int(only) == rank else None


def send_signal_at(step: int, due: int | None) -> None:
    """SIGTERM to this process where `step` is the due one."""
    if step == due:
        os.kill(os.getpid(), signal.SIGTERM)
