"""Which implementation a sequential step or an op runs, and a record of the path each one took.

Three kinds of path exist: the eager PyTorch code (always there, and the reference every test compares
against), a `torch.compile`d per-step function (one chunk or one token of a recurrent loop; the
Python loop around it stays eager, so compilation cost does not grow with the length), and an
external kernel library on CUDA (fla for linear attention, the SSD and the delta rule:
`pulse.ops.fla`; mamba-ssm for the selective scan: `pulse.ops.mamba`).

One switch, the environment variable PULSE_COMPILE or `set_compile`:

- `auto` (default): compile the step functions only for CUDA tensors, where a chunk's dozens of
  small kernels are launch-bound; CPU stays eager, which is what CPU tests run;
- `1` / `on`: compile on every device (what the CPU parity test uses);
- `0` / `off`: always eager.

PULSE_FLA=0 / PULSE_MAMBA=0 turn the fla / mamba-ssm dispatch off. A path that fails (no compiler, a kernel library that
refuses the GPU) falls back to eager once, with a warning that names the path and the reason;
`paths_taken()` tells callers such as `pulse bench` which path each op took.
"""

from __future__ import annotations

import functools
import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch

from pulse import threads
from pulse.errors import PulseError

_CHOICES = {"auto": None, "": None, "1": True, "on": True, "true": True, "0": False, "off": False, "false": False}
_override: bool | None = None
_explicit = False
_paths: dict[str, str] = {}
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_failed: set[str] = set()


def set_compile(value: bool | None) -> None:
    """True: compile step functions on every device; False: never; None: back to PULSE_COMPILE / auto."""
    global _override, _explicit
    _override, _explicit = value, value is not None


def _env_setting(name: str) -> bool | None:
    text = os.environ.get(name, "auto").strip().lower()
    if text not in _CHOICES:
        raise PulseError(f"{name}={text!r}: use auto, 1/on or 0/off.")
    return _CHOICES[text]


def compile_enabled(device: torch.device | str) -> bool:
    """Whether step functions for tensors on `device` run compiled."""
    setting = _override if _explicit else _env_setting("PULSE_COMPILE")
    if setting is None:
        return torch.device(device).type == "cuda"
    return setting


def library_allowed(variable: str) -> bool:
    """False when the environment variable (PULSE_FLA, PULSE_MAMBA) is 0 / off."""
    return _env_setting(variable) is not False


def dispatch(
    op: str, library: str, variable: str, x: torch.Tensor, ready: bool,
    unavailable: Callable[[], str | None], probe_call: Callable[[], None], kernel: Callable[[], Any],
) -> Any | None:
    """Run `kernel` (from `library`) for `op` where it is `ready` for x (a CUDA tensor and the library
    imports; else `unavailable()` says why) and `variable` does not turn it off, after `probe_call`
    has checked it works on this GPU; None where the caller's eager reference should run. The path
    taken is recorded in `paths_taken()`; a failing probe or kernel warns once and falls back."""
    allowed = library_allowed(variable)
    if allowed and ready:
        try:
            probe_call()
            out = kernel()
        except Exception as err:  # noqa: BLE001 — e.g. a kernel refusing this Triton on this GPU: the reference runs
            warn_fallback(op, library, err)
        else:
            record(op, library)
            return out
    elif x.is_cuda and allowed:
        record(op, f"eager ({library} unavailable: {unavailable()})")
    else:
        record(op, "eager")
    return None


def record(op: str, path: str) -> None:
    """Note that `op` ran on `path` (eager, compiled, fla, or a fallback with its reason)."""
    _paths[op] = path


def paths_taken() -> dict[str, str]:
    """op → the path it took most recently in this process."""
    return dict(_paths)


def reset_paths() -> None:
    _paths.clear()


def warn_fallback(op: str, path: str, err: BaseException) -> str:
    """Warn once per op that `path` failed and eager runs instead; returns the recorded path."""
    reason = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    taken = f"eager ({path} failed: {reason})"
    if op not in _failed:
        _failed.add(op)
        warnings.warn(f"pulse: {op} fell back to the eager path because {path} failed — {reason}", stacklevel=3)
    record(op, taken)
    return taken


def step_function(owner: Any, name: str, fn: Callable, device: torch.device | str) -> Callable:
    """`fn` (a step of `owner`'s loop), compiled when `compile_enabled(device)`, else `fn` itself.

    Compiled functions are cached per owner and name. The first call of a compiled function that
    raises falls back to eager for good, with a warning; the eager function is the reference.
    """
    threads.tick()  # once per call of a sequential loop: where a long run re-checks its CPU threads
    op = f"{type(owner).__name__}.{name}"
    if not compile_enabled(device) or op in _failed:
        record(op, _paths.get(op, "eager") if op in _failed else "eager")
        return fn
    # the cache holds the unbound function, so it does not keep its owner alive
    func = getattr(fn, "__func__", fn)
    cache = _compiled.setdefault(owner, {})
    if name not in cache:
        cache[name] = _Guarded(op, torch.compile(func, dynamic=False), func)
    record(op, "compiled")
    return functools.partial(cache[name], owner) if func is not fn else cache[name]


class _Guarded:
    """A compiled function that falls back to its eager twin if its first call fails."""

    def __init__(self, op: str, compiled: Callable, eager: Callable):
        self.op, self.compiled, self.eager, self.ok = op, compiled, eager, False

    def __call__(self, *args: Any) -> Any:
        if self.op in _failed:
            return self.eager(*args)
        if self.ok:
            return self.compiled(*args)
        try:
            out = self.compiled(*args)
        except Exception as err:  # noqa: BLE001 — any compiler failure means: run the reference instead
            warn_fallback(self.op, "compiled", err)
            return self.eager(*args)
        self.ok = True
        return out
