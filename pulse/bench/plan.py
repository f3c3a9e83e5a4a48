"""Looking ahead in a bench run: what a length will cost before it is tried, and how long is left.

A measuring process at length T costs about wall(T) ≈ wall(T₀)·(T/T₀)^k, with k fitted on the
lengths this system has already measured (at least 1, and 2 — attention's exponent — while only
one length is known). The same extrapolation of peak memory, or before any measurement a lower
bound of a few activation-sized tensors, guards against lengths that would swamp the machine.
The run's warnings (a busy machine, a wide spread between repeats) come from here too.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from pulse.bench.fit import fit_scaling

# before anything is measured: a length is at least this many (batch × T × dim) activations
_ACTIVATIONS_LOWER_BOUND = {"forward": 4, "train": 12, "generate": 4}
_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# a measurement's (max − min) / median beyond this makes its ratios doubtful
SPREAD_WARNING = 0.25
# load average per logical CPU beyond this means other work competes with the measurements
LOAD_WARNING = 0.75


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


def _exponent(points: list[tuple[int, float]], floor: float) -> float:
    fit = fit_scaling([t for t, _ in points], [v for _, v in points]) if len(points) >= 2 else None
    return max(floor, fit.exponent) if fit else 2.0


def _split(run: dict[str, Any]) -> tuple[float, float]:
    """A process's wall seconds as (fixed, scaling): what does not grow with T (starting Python, importing
    torch, a CUDA context, building the model, compiling step functions) and the measured work that does.

    `scaling_s` comes from the worker (the timed calls, their warm-ups and the prefill, at steady speed);
    a run without it (an older document) counts as all scaling, which is the cautious reading.
    """
    wall = run["wall_s"]
    scaling = min(wall, run.get("scaling_s", wall))
    return wall - scaling, scaling


def project(history: list[dict[str, Any]], seq_len: int) -> dict[str, float] | None:
    """Projected wall seconds and peak memory bytes of one process at seq_len from this system's ok runs.

    Only the part of a process's time that grows with T is scaled: at a short length a process is mostly
    start-up, and scaling that by (T/T₀)^k would skip lengths that finish in seconds.
    """
    ok = [r for r in history if r.get("status") == "ok" and r.get("wall_s")]
    if not ok:
        return None
    last = max(ok, key=lambda r: r["seq_len"])
    points = [(r["seq_len"], _split(r)[1]) for r in ok]
    k = _exponent([(t, v) for t, v in points if v > 0], 1.0)
    fixed, scaling = _split(last)
    out = {"wall_s": fixed + scaling * (seq_len / last["seq_len"]) ** k, "exponent": k, "fitted": len(points) >= 2}
    # memory the same way: what a process's first call sets up (memory_fixed_bytes, from the worker) stays
    mems = [(r["seq_len"], float(r["memory_bytes"]), min(float(r.get("memory_fixed_bytes", 0)), r["memory_bytes"]))
            for r in ok if r.get("memory_bytes", 0) > 0]
    if mems:
        t0, m0, f0 = max(mems)
        k_mem = _exponent([(t, m - f) for t, m, f in mems if m > f], 1.0)
        out["memory_bytes"] = f0 + (m0 - f0) * (seq_len / t0) ** k_mem
    return out


def lower_bound_memory(system: dict[str, Any], seq_len: int, batch: int, mode: str, dtype: str) -> float | None:
    """Bytes a first measurement needs at least: a few (batch × T × dim) activations, and a language model's
    (batch × T × vocab) logits once; None when dim is unknown."""
    model = (system.get("recipe") or {}).get("model") or {}
    dim = system.get("dim") or model.get("dim")
    if not isinstance(dim, int):
        return None
    vocab = model.get("vocab_size") if mode != "generate" else 0
    width = _ACTIVATIONS_LOWER_BOUND.get(mode, 4) * dim + (vocab if isinstance(vocab, int) else 0)
    return float(width * batch * seq_len * _BYTES.get(dtype, 4))


def check(system: dict[str, Any], history: list[dict[str, Any]], seq_len: int, settings: Any) -> str | None:
    """Why this length should not be tried (projected past --timeout or the memory cap), or None."""
    cap = settings.max_memory_gb * 2**30 if settings.max_memory_gb else default_memory_cap(settings.device)
    where = "90 % of the GPU's memory" if settings.device.startswith("cuda") else "half the RAM"
    cap_name = f"--max-memory {settings.max_memory_gb:g} GiB" if settings.max_memory_gb else \
        f"the default memory guard ({cap / 2**30:.3g} GiB, {where}; raise it with --max-memory)"
    guess = project(history, seq_len)
    if guess is not None:
        if guess["wall_s"] > settings.timeout:
            basis = "from the lengths measured" if guess["fitted"] else "assumed: one length measured so far"
            return (f"projected {guess['wall_s']:.3g} s, over --timeout {settings.timeout:g} s "
                    f"(time ∝ T^{guess['exponent']:.2f}, {basis})")
        if guess.get("memory_bytes", 0) > cap:
            return f"projected {guess['memory_bytes'] / 2**30:.3g} GiB, over {cap_name}"
        return None
    floor = lower_bound_memory(system, seq_len, settings.batch, settings.mode, settings.dtype)
    if floor is not None and floor > cap:
        return f"needs at least {floor / 2**30:.3g} GiB of activations, over {cap_name}"
    return None


def eta(history: dict[str, list[dict[str, Any]]], todo: list[tuple[str, int]], fallback: float | None,
        timeout: float) -> float | None:
    """Seconds the remaining (system, length) processes should take, or None when nothing is known yet.

    A process projected past `timeout` counts as nothing: it is skipped before it starts.
    """
    total = 0.0
    for name, seq_len in todo:
        guess = project(history.get(name, []), seq_len)
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
