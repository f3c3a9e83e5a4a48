"""Looking ahead in a bench run: what a length will cost before it is tried, and how long is left.

A measuring process at length T costs about wall(T) ≈ fixed + scaling(T₀)·(T/T₀)^k. With two lengths
measured, k is fitted on them; with one, the system's own cost formulas give it: the ratio of its
blocks' FLOPs for a sequence of T and of T₀ (pulse.projection.work, from every block's
flops_per_token), never an exponent assumed for a kind. Peak memory is extrapolated the same way
(fitted, or by the ratio of pulse.projection's memory at T and T₀); before any measurement a floor —
the state every block returns (its state_numel) and a few activation-sized tensors — guards against
lengths that would swamp the machine. The run's warnings (a busy machine, a wide spread between
repeats) come from here too.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from pulse import projection
from pulse.bench.fit import fit_scaling

# before anything is measured: a length needs at least this many (batch × T × dim) activations, besides its state
_ACTIVATIONS_LOWER_BOUND = {"forward": 4, "train": 12, "generate": 4}
_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# a measurement's (max − min) / median beyond this makes its ratios doubtful
SPREAD_WARNING = 0.25
# load average per logical CPU beyond this means other work competes with the measurements
LOAD_WARNING = 0.75


class Formulas(Protocol):
    """A system's cost at a length, by its own formulas: how the measured figures are carried to other lengths."""

    def work(self, length: int) -> float: ...

    def memory(self, length: int) -> float: ...


@dataclass
class SystemFormulas:
    """The formulas of a system built on the meta device (no memory, no time): its blocks' flops_per_token and
    state, through pulse.projection, at the batch and mode being measured."""

    model: nn.Module
    batch: int
    mode: str
    dtype: str

    def work(self, length: int) -> float:
        return projection.work(self.model, length)

    def memory(self, length: int) -> float:
        return projection.cost(self.model, length, batch=self.batch, logits=self.mode != "generate").memory_bytes

    def floor(self, length: int) -> float:
        """Bytes a first measurement needs at least: the state every block returns, a few (batch × T × dim)
        activations, and a language model's (batch × T × vocab) logits once."""
        vocab = int(getattr(self.model, "vocab_size", 0) or 0) if self.mode != "generate" else 0
        width = _ACTIVATIONS_LOWER_BOUND.get(self.mode, 4) * projection.model_dim(self.model) + vocab
        state = projection.cost(self.model, length, batch=self.batch, logits=False).parts["state"]
        return float(width * self.batch * length * _BYTES.get(self.dtype, 4)) + state


def default_memory_cap(device: str = "cpu") -> float:
    """Bytes a single measurement may be projected to use without --max-memory: half the machine's RAM,
    or on CUDA 90 % of the device's memory."""
    if device.startswith("cuda"):
        import torch

        return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return 0.5 * pages * size
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _fitted(points: list[tuple[int, float]]) -> float | None:
    """The exponent fitted on two lengths or more (at least 1), else None."""
    fit = fit_scaling([t for t, _ in points], [v for _, v in points]) if len(points) >= 2 else None
    return max(1.0, fit.exponent) if fit else None


def _by_formula(formula: Any, t0: int, t: int) -> float:
    """The exponent a formula gives between t0 and t (between t0 and 2·t0 where they are equal)."""
    t1 = t if t != t0 else 2 * t0
    return math.log(max(formula(t1), 1e-30) / max(formula(t0), 1e-30)) / math.log(t1 / t0)


def _split(run: dict[str, Any]) -> tuple[float, float]:
    """A process's wall seconds as (fixed, scaling): what does not grow with T (starting Python, importing
    torch, a CUDA context, building the model, compiling step functions) and the measured work that does.

    `scaling_s` comes from the worker (the timed calls, their warm-ups and the prefill, at steady speed);
    a run without it (an older document) counts as all scaling, which is the cautious reading.
    """
    wall = run["wall_s"]
    scaling = min(wall, run.get("scaling_s", wall))
    return wall - scaling, scaling


def project(history: list[dict[str, Any]], seq_len: int, formulas: Formulas) -> dict[str, float] | None:
    """Projected wall seconds and peak memory bytes of one process at seq_len from this system's ok runs.

    Only the part of a process's time that grows with T is scaled: at a short length a process is mostly
    start-up, and scaling that by (T/T₀)^k would skip lengths that finish in seconds. k is fitted on the
    lengths measured, or while one is, taken from the system's `formulas`.
    """
    ok = [r for r in history if r.get("status") == "ok" and r.get("wall_s")]
    if not ok:
        return None
    last = max(ok, key=lambda r: r["seq_len"])
    fitted = _fitted([(r["seq_len"], _split(r)[1]) for r in ok if _split(r)[1] > 0])
    k = fitted if fitted is not None else _by_formula(formulas.work, last["seq_len"], seq_len)
    fixed, scaling = _split(last)
    out = {"wall_s": fixed + scaling * (seq_len / last["seq_len"]) ** k, "exponent": k, "fitted": fitted is not None}
    # memory the same way: what a process's first call sets up (memory_fixed_bytes, from the worker) stays
    mems = [(r["seq_len"], float(r["memory_bytes"]), min(float(r.get("memory_fixed_bytes", 0)), r["memory_bytes"]))
            for r in ok if r.get("memory_bytes", 0) > 0]
    if mems:
        t0, m0, f0 = max(mems)
        k_mem = _fitted([(t, m - f) for t, m, f in mems if m > f])
        k_mem = k_mem if k_mem is not None else _by_formula(formulas.memory, t0, seq_len)
        out["memory_bytes"] = f0 + (m0 - f0) * (seq_len / t0) ** k_mem
    return out


def check(formulas: SystemFormulas, history: list[dict[str, Any]], seq_len: int, settings: Any) -> str | None:
    """Why this length should not be tried (projected past --timeout or the memory cap), or None."""
    cap = settings.max_memory_gb * 2**30 if settings.max_memory_gb else default_memory_cap(settings.device)
    where = "90 % of the GPU's memory" if settings.device.startswith("cuda") else "half the RAM"
    cap_name = f"--max-memory {settings.max_memory_gb:g} GiB" if settings.max_memory_gb else \
        f"the default memory guard ({cap / 2**30:.3g} GiB, {where}; raise it with --max-memory)"
    guess = project(history, seq_len, formulas)
    if guess is not None:
        if guess["wall_s"] > settings.timeout:
            basis = "from the lengths measured" if guess["fitted"] else \
                "from its blocks' FLOPs: one length measured so far"
            return (f"projected {guess['wall_s']:.3g} s, over --timeout {settings.timeout:g} s "
                    f"(time ∝ T^{guess['exponent']:.2f}, {basis})")
        if guess.get("memory_bytes", 0) > cap:
            return f"projected {guess['memory_bytes'] / 2**30:.3g} GiB, over {cap_name}"
        return None
    floor = formulas.floor(seq_len)
    if floor > cap:
        return f"needs at least {floor / 2**30:.3g} GiB of state and activations, over {cap_name}"
    return None


def eta(history: dict[str, list[dict[str, Any]]], todo: list[tuple[str, int]], fallback: float | None,
        timeout: float, formulas: dict[str, Formulas]) -> float | None:
    """Seconds the remaining (system, length) processes should take, or None when nothing is known yet.

    A process projected past `timeout` counts as nothing: it is skipped before it starts.
    """
    total = 0.0
    for name, seq_len in todo:
        guess = project(history.get(name, []), seq_len, formulas[name])
        if guess is not None:
            total += guess["wall_s"] if guess["wall_s"] <= timeout else 0.0
        elif fallback is not None:
            total += fallback
        else:
            return None
    return total


def load_warning() -> str | None:
    """A sentence when the 1-minute load average says other work competes for the CPUs."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    cpus = os.cpu_count() or 1
    if load > LOAD_WARNING * cpus:
        return (f"the machine is busy: load average {load:.1f} on {cpus} logical CPUs; other work competes with the "
                "measurements, so absolute times are inflated and ratios are less trustworthy "
                "(rerun on a quiet machine, or use --rounds ≥ 3 so ratios come from interleaved pairs)")
    return None


def spread_warnings(doc: dict[str, Any]) -> list[str]:
    """A sentence naming each (system, length) whose repeats spread more than SPREAD_WARNING of the median."""
    wide = []
    for system in doc["systems"]:
        for r in system["results"]:
            if r.get("status") != "ok" or len(r.get("times_s", [])) < 2:
                continue
            t = r["time_s"]
            spread = (t["max"] - t["min"]) / t["median"]
            if spread > SPREAD_WARNING:
                wide.append(f"{system['name']} T={r['seq_len']} ({100 * spread:.0f} %)")
    if not wide:
        return []
    return [f"repeats spread more than {100 * SPREAD_WARNING:.0f} % of their median (max − min) at: {', '.join(wide)}; "
            "ratios there are doubtful (more --repeats or --rounds, or a quieter machine)"]


def paths_summary(runs: list[dict[str, Any]]) -> str:
    """How a system's ops ran: eager, compiled, fla, mamba-ssm, or several of them (a fallback shows its reason)."""
    seen: list[str] = []
    for r in runs:
        for op, path in sorted((r.get("paths") or {}).items()):
            label = path if path in ("eager", "compiled", "fla", "mamba-ssm") else f"{op}: {path}"
            if label not in seen:
                seen.append(label)
    return " + ".join(seen) if seen else "eager"


def median_wall(runs: list[dict[str, Any]]) -> float | None:
    walls = [r["wall_s"] for r in runs if r.get("wall_s")]
    return statistics.median(walls) if walls else None
