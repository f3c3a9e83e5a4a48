"""How many CPU threads torch uses: the CPUs actually free, unless someone chose (a leaf room).

Why: the chunked forms of the state mixers (delta rule, selective scan, the PULSE chunk step, …)
run thousands of small OpenMP regions per step, and each region ends at a barrier that waits for
every thread of torch's team. When another process holds one of the cores, the thread scheduled
there waits a time slice while its partner spins: on a 2-core machine with one busy process a
2-thread gated_deltanet ran fwd + bwd 4.5× slower, ssm 21× (issue 35), while attention, a few large
matmuls, lost only the core (2×). With one thread there is no barrier to wait at (docs/benchmarks.md,
"Threads on a shared CPU", has the measurements).

The policy, in order — an explicit choice always wins:

1. `PULSE_THREADS=N` (N ≥ 1): N threads, never changed; `PULSE_THREADS=off`: torch's own default, untouched;
2. `OMP_NUM_THREADS` or `MKL_NUM_THREADS` in the environment: torch already obeys it; left alone;
3. a recipe's `train.threads`, `pulse bench --threads` (`use(n)`), or `torch.set_num_threads` called
   after PULSE chose (seen at the next check): left alone from then on;
4. otherwise (`PULSE_THREADS=auto`, the default): the free CPUs of this process's affinity set —
   idle time sampled from /proc/stat plus what this process itself used over the same window —
   rounded down unless 3/4 of a CPU is free, at least 1. `pulse` commands and `pulse bench`'s
   measuring processes start it (`adapt`); the chunked ops call `tick()`, which re-checks every
   `INTERVAL` seconds of a long run from the time since the last check (no sleeping).

Python users opt in with `pulse.threads.adapt()` (or `PULSE_THREADS=auto` and a `pulse` command);
where /proc/stat is missing (not Linux) nothing changes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from pulse.errors import PulseError

INTERVAL = 5.0  # seconds between re-checks during a long run
SAMPLE = 0.15  # seconds a fresh process samples before its first choice, where it waits for one
MARGIN = 0.25  # a CPU counts as free when at least 1 - MARGIN of it was free


@dataclass(frozen=True)
class Sample:
    """CPU counters at one moment: per CPU (idle, total) jiffies, this process's CPU seconds, the wall clock."""

    cpus: dict[str, tuple[int, int]]
    own_s: float
    wall_s: float


def parse_stat(text: str) -> dict[str, tuple[int, int]]:
    """`cpuN` → (idle + iowait, total) jiffies from /proc/stat's text."""
    out = {}
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and len(fields) >= 4:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = (ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks))
    return out


def allowed_cpus() -> list[str]:
    """`cpuN` names this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return [f"cpu{i}" for i in sorted(os.sched_getaffinity(0))]
    return [f"cpu{i}" for i in range(os.cpu_count() or 1)]


def sample(stat: str = "/proc/stat") -> Sample | None:
    """Now's counters, or None where /proc/stat cannot be read."""
    try:
        with open(stat) as f:
            text = f.read()
    except OSError:
        return None
    return Sample(parse_stat(text), time.process_time(), time.monotonic())


def free_cpus(before: Sample, after: Sample, allowed: list[str]) -> float:
    """CPUs free to this process between two samples: idle time of its allowed CPUs plus its own use."""
    idle = 0.0
    for cpu in allowed:
        if cpu in before.cpus and cpu in after.cpus:
            d_idle = after.cpus[cpu][0] - before.cpus[cpu][0]
            d_total = after.cpus[cpu][1] - before.cpus[cpu][1]
            idle += min(1.0, max(0.0, d_idle / d_total)) if d_total > 0 else 1.0
    wall = after.wall_s - before.wall_s
    own = max(0.0, after.own_s - before.own_s) / wall if wall > 0 else 0.0
    return idle + own


def choose(free: float, allowed: int) -> int:
    """Threads for `free` CPUs of `allowed`: rounded down unless 1 - MARGIN of a CPU is free, 1 … allowed."""
    return max(1, min(allowed, math.floor(free + MARGIN)))


def setting(environ: dict[str, str] | None = None) -> str | int:
    """What the environment asks for: a thread count, `auto`, `off`, or `env` (OMP/MKL_NUM_THREADS decide)."""
    environ = os.environ if environ is None else environ
    text = environ.get("PULSE_THREADS", "").strip().lower()
    if text in ("", "auto"):
        return "env" if environ.get("OMP_NUM_THREADS") or environ.get("MKL_NUM_THREADS") else "auto"
    if text in ("off", "0"):
        return "off"
    if text.isdigit():
        return int(text)
    raise PulseError(f"PULSE_THREADS={text!r}: use auto (threads from the free CPUs, the default), off (torch's "
                     "own default) or a number of threads ≥ 1.")


class _Policy:
    """This process's state: whether it adapts, what it last set, the last sample and when to look again."""

    def __init__(self) -> None:
        self.on, self.set_to, self.last, self.due = False, 0, None, 0.0
        self.how = "torch's default"

    def start(self, wait: float) -> int:
        import torch

        choice = setting()
        if isinstance(choice, int):
            return self.hold(choice, "PULSE_THREADS")
        if choice != "auto":
            self.on, self.how = False, "OMP_NUM_THREADS" if choice == "env" else "torch's default (PULSE_THREADS=off)"
            return torch.get_num_threads()
        self.last = sample()
        if self.last is None:
            return torch.get_num_threads()
        self.on, self.set_to, self.how = True, torch.get_num_threads(), "free CPUs"
        self.due = time.monotonic() + SAMPLE
        if wait > 0:
            time.sleep(wait)
            self.due = 0.0
            self.check()
        return torch.get_num_threads()

    def hold(self, n: int, how: str) -> int:
        import torch

        torch.set_num_threads(n)
        self.on, self.set_to, self.how = False, n, how
        return n

    def check(self) -> None:
        import torch

        now = time.monotonic()
        if now < self.due:
            return
        if torch.get_num_threads() != self.set_to:  # someone else chose since: theirs wins from now on
            self.on, self.how = False, "torch.set_num_threads"
            return
        after = sample()
        if after is None or self.last is None:
            self.on = False
            return
        allowed = allowed_cpus()
        n = choose(free_cpus(self.last, after, allowed), len(allowed))
        if n != self.set_to:
            torch.set_num_threads(n)
            self.set_to = n
        self.last, self.due = after, now + INTERVAL


_policy = _Policy()


def adapt(wait: float = 0.0) -> int:
    """Start the policy in this process (unless an explicit choice stands); returns torch's thread count.

    `wait` > 0 samples that long and chooses now (a fresh measuring process); 0 chooses at the first
    `tick()` at least SAMPLE seconds later, from what happened meanwhile."""
    return _policy.start(wait)


def use(n: int, how: str = "train.threads") -> int:
    """An explicit choice of `n` threads (a recipe, a flag): set it and never change it."""
    if n < 1:
        raise PulseError(f"{how} = {n}: give a number of threads ≥ 1.")
    return _policy.hold(n, how)


def freeze() -> None:
    """Keep the current count from now on (a measurement times one thread count throughout)."""
    _policy.on = False


def tick() -> None:
    """Re-check the choice when it is due: cheap (a clock read) on every other call."""
    if _policy.on and time.monotonic() >= _policy.due:
        _policy.check()


def chosen() -> str:
    """How this process's thread count was chosen: `free CPUs`, `PULSE_THREADS`, `OMP_NUM_THREADS`, …"""
    return _policy.how


def reset() -> None:
    """Forget the policy (tests)."""
    global _policy
    _policy = _Policy()
