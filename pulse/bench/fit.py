"""Scaling exponents: how time grows with sequence length.

time ≈ c · Tᵏ, so log time = log c + k · log T; k is the least-squares slope of the
log–log points. k ≈ 1 is linear cost, k ≈ 2 quadratic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ScalingFit:
    exponent: float  # the slope k
    log_coefficient: float  # log c (natural log, time in the caller's unit)
    r2: float  # fraction of the log-time variance the line explains
    points: int
    seq_lens: tuple[int, ...]

    def predict(self, seq_len: float) -> float:
        return math.exp(self.log_coefficient) * seq_len**self.exponent

    def to_dict(self) -> dict:
        return {**asdict(self), "seq_lens": list(self.seq_lens)}


def fit_scaling(seq_lens: Sequence[float], times: Sequence[float]) -> ScalingFit | None:
    """Least-squares slope of log(time) against log(seq_len); None with fewer than two distinct lengths."""
    points = [(float(n), float(t)) for n, t in zip(seq_lens, times, strict=True) if n > 0 and t > 0]
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    syy = sum((y - my) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - residual / syy if syy > 0 else 1.0
    return ScalingFit(slope, intercept, r2, len(points), tuple(int(n) for n, _ in points))


def local_exponents(seq_lens: Sequence[float], times: Sequence[float]) -> list[float]:
    """The slope between each pair of consecutive lengths: where the growth bends."""
    pairs = sorted((n, t) for n, t in zip(seq_lens, times, strict=True) if n > 0 and t > 0)
    return [
        math.log(t2 / t1) / math.log(n2 / n1)
        for (n1, t1), (n2, t2) in zip(pairs, pairs[1:])
        if n2 != n1
    ]
