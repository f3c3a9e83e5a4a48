"""Steps that slow down mid-run: said once, with what to change."""

from __future__ import annotations


class SlowSteps:
    """Notices, once, when steps take far longer than they did at the start: other work competing for the cores.

    The baseline is the median of steps warmup+1 … warmup+baseline; afterwards the mean of each
    `window` steps is compared with it. Returns the message to say (once), else None.
    """

    def __init__(self, threads: int, *, factor: float = 4.0, warmup: int = 2, baseline: int = 8, window: int = 10):
        self.threads, self.factor, self.warmup, self.baseline, self.window = threads, factor, warmup, baseline, window
        self.times: list[float] = []
        self.base: float | None = None
        self.said = False

    def __call__(self, seconds: float) -> str | None:
        self.times.append(seconds)
        n = len(self.times)
        if self.base is None:
            if n == self.warmup + self.baseline:
                ordered = sorted(self.times[self.warmup:])
                self.base = ordered[len(ordered) // 2]
            return None
        if self.said or n % self.window:
            return None
        recent = sum(self.times[-self.window:]) / self.window
        if recent <= self.factor * self.base:
            return None
        self.said = True
        threads = f"train.threads = {self.threads}" if self.threads else "train.threads (0: torch's default)"
        return (f"steps now take {recent:.3g} s, {recent / self.base:.0f}× the {self.base:.3g} s of the first steps: "
                f"other work is probably competing for the CPU cores. {threads} sets how many threads torch uses; "
                "fewer than the free cores avoids the contention.")
