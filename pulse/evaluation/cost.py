"""What an evaluation will cost before it runs: memory and time, from the model's own cost formulas.

Every evaluation of a language model at a length it was not trained at (`pulse eval --context-curve`,
`--passkey`, `--harness`) asks `cost` first, and `check_memory` refuses a length whose projected
memory passes what this machine has free — before any work, so nothing is killed half-way.

The projection itself (activations, context, state, logits, ids; from the block contract alone) is
pulse.projection's `cost`; this module checks it against the machine and paces the lengths.

Time is FLOPs (tokens × flops_per_token(n), summed over blocks) over a rate measured on this
machine: a short forward before the first length, then each length measured.

"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pulse.bench import parse_lengths
from pulse.errors import PulseError, PulseWarning
from pulse.projection import Cost, cost
from pulse.units import fmt_bytes

HARNESS_LENGTH = 2048  # lm-eval's HFLM cuts requests to this when the model's config names no length
TRIAL_FLOPS = 1e9  # work of the trial forward that measures this machine's rate (~0.1 s on a CPU)
HEADROOM = 0.85  # share of the available memory a projection may take: measured peaks ran up to 15 % above it


def available_memory(device: str | torch.device = "cpu") -> float | None:
    """Bytes this process can still take: free GPU memory on CUDA, else the kernel's MemAvailable (or, where
    there is none, half the physical memory); None where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:  # no /proc (macOS, …): the physical memory below
        pass
    try:
        return 0.5 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def largest(fits: Callable[[int], bool], upto: int) -> int:
    """The largest value in [1, upto] for which `fits` holds (0 if none); `fits` holds below any value it holds at."""
    lo, hi = 0, upto + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def check_memory(project: Callable[[int], Cost], values: list[int], *, option: str, device: str = "cpu",
                 varies: str = "tokens", change: str = "give shorter lengths") -> list[Cost]:
    """Each value's projected cost (a length, or with varies="rows" a batch size); a PulseError naming the first
    that would not fit in this machine's available memory: projected, available, what fits, what to change."""
    available = available_memory(device)
    costs = [project(v) for v in values]
    if available is None:
        most = fmt_bytes(int(max((c.memory_bytes for c in costs), default=0)))
        warnings.warn(f"{option}: this machine's free memory cannot be read, so the projected memory (up to {most}) "
                      "is not checked before it runs.", PulseWarning, stacklevel=2)
        return costs
    limit = HEADROOM * available
    for value, c in zip(values, costs):
        if c.memory_bytes > limit:
            fits = largest(lambda v: project(v).memory_bytes <= limit, value)
            room = f"about {fits:,} {varies} would fit" if fits else "nothing would fit"
            raise PulseError(
                f"{option}: a forward of {c.batch:,} × {c.length:,} tokens would need about {c.describe()}, over "
                f"{HEADROOM:.0%} of the {fmt_bytes(int(available))} of memory this machine has available (a projection "
                f"can be some {1 - HEADROOM:.0%} low); {room}: {change}, or free memory.")
    return costs


class Pace:
    """This machine's FLOPs per second for `model`: a trial forward of about `TRIAL_FLOPS` (at most `longest`
    tokens, so that a small model's fixed cost per call does not pass for its speed), then each length measured
    with at least as much work. Projects a length's seconds, and says why one passes --max-seconds."""

    def __init__(self, model: nn.Module, longest: int, device: str | torch.device = "cpu"):
        self.model, self.longest, self.device = model, longest, device
        self.rate, self.basis = 0.0, ""

    def _trial(self) -> None:
        n = max(largest(lambda v: cost(self.model, v).flops <= TRIAL_FLOPS, self.longest), min(self.longest, 16))
        ids = torch.zeros(1, n, dtype=torch.long, device=self.device)
        best = float("inf")
        with torch.no_grad():
            for _ in range(2):  # the best of two: the first pays for what a first call sets up
                began = time.perf_counter()
                self.model(ids)
                best = min(best, time.perf_counter() - began)
        self.rate, self.basis = cost(self.model, n).flops / max(best, 1e-9), f"of a trial forward of {n:,} tokens"

    def projected(self, c: Cost, repeats: int) -> dict[str, float]:
        """What `repeats` forwards of `c` should take: peak memory above the model, and seconds."""
        if not self.rate:
            self._trial()
        return {"memory_bytes": c.memory_bytes, "seconds": c.flops * repeats / self.rate}

    def over(self, c: Cost, repeats: int, max_seconds: float) -> str | None:
        """Why this length should be skipped (projected past --max-seconds), or None."""
        seconds = self.projected(c, repeats)["seconds"]
        if seconds <= max_seconds:
            return None
        return (f"projected {seconds:.3g} s > --max-seconds {max_seconds:g} ({repeats} forward(s) of "
                f"{c.flops / 1e9:.3g} GFLOP at {self.rate / 1e9:.3g} GFLOP/s, the rate {self.basis})")

    def record(self, c: Cost, repeats: int, seconds: float) -> None:
        """A length measured: its rate stands for the next when it did at least a trial's work."""
        if c.flops * repeats >= TRIAL_FLOPS:
            self.rate, self.basis = c.flops * repeats / max(seconds, 1e-9), f"measured at T={c.length:,}"


def check_options(option: str, lengths: str | Sequence[int], max_seconds: float, **counts: int) -> list[int]:
    """An evaluation's lengths (as written, "256,1k,4k", or a list), budget and counts (--windows, --trials), each
    checked with the option named; returns the lengths."""
    if isinstance(lengths, str):
        lengths = parse_lengths(lengths, option)
    lengths = list(lengths)
    if not lengths:
        raise PulseError(f"{option} takes lengths, e.g. {option} 1k,4k.")
    bad = [n for n in lengths if n <= 0]
    if bad:
        raise PulseError(f"{option}: {bad[0]:,} is not a length; a length is a positive number of tokens, "
                         f"e.g. {option} 1k,4k.")
    if not max_seconds >= 0:  # NaN too
        raise PulseError(f"--max-seconds {max_seconds}: give a budget of 0 seconds or more per length.")
    for name, value in counts.items():
        if value < 1:
            raise PulseError(f"--{name} {value}: give 1 or more.")
    return lengths


def check_depths(depths: str | Sequence[float]) -> list[float]:
    """The passkey's depths (as written, "0,0.5,1", or a list), each once in the order given, all in [0, 1]."""
    shown = depths if isinstance(depths, str) else ",".join(f"{d:g}" for d in depths)
    advice = f"--depths `{shown}`: write depths between 0 and 1 (0: the key at the start, 1: just before the " \
             "question), e.g. 0,0.5,1."
    try:
        values = [float(d) for d in (depths.split(",") if isinstance(depths, str) else depths)
                  if not isinstance(d, str) or d.strip()]
    except (TypeError, ValueError):
        raise PulseError(advice) from None
    if not values or not all(0 <= d <= 1 for d in values):  # NaN too
        raise PulseError(advice)
    return list(dict.fromkeys(values))


def check_harness_memory(model: nn.Module, batch_size: int, device: str = "cpu") -> Cost:
    """The harness's batch projected at its longest request (HARNESS_LENGTH tokens, every position scored); a
    PulseError when it would not fit, naming the largest --batch-size that would."""
    return check_memory(lambda rows: cost(model, HARNESS_LENGTH, batch=rows), [batch_size], option="--harness",
                        device=device, varies="rows",
                        change=f"give a smaller --batch-size (the harness pads a batch to its longest request, up "
                               f"to {HARNESS_LENGTH:,} tokens)")[0]
