"""Run a benchmark: one fresh process per (system, length, round), systems interleaved.

Order of work: for each length (shortest first), for each round, every system in
turn — A, B, A, B — so drift of a shared machine hits all systems alike, and ratios
against the first system (the baseline) are taken pair by pair within a round. A
system that runs out of memory, time or budget at one length is reported as skipped
there and not tried at longer lengths.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pulse.bench.fit import fit_scaling, local_exponents
from pulse.errors import PulseError

SCHEMA = "pulse.bench/1"


@dataclass(frozen=True)
class System:
    """Something to measure: `spec` is what the worker builds (a recipe dict, or a mixer kind with params)."""

    name: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    seq_lens: tuple[int, ...]
    batch: int = 1
    mode: str = "forward"
    repeats: int = 5
    warmup: int = 1
    rounds: int = 1
    generate_tokens: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    max_seconds: float | None = None
    timeout: float = 600.0
    max_memory_gb: float | None = None
    matmul_size: int = 2048
    fit_from: int | None = None
    seed: int = 0

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> "Settings":
        """Settings from a recipe's BenchSpec, with every override that is not None taking precedence."""
        values = {name: getattr(spec, name) for name in cls.__dataclass_fields__ if hasattr(spec, name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["seq_lens"] = tuple(sorted(set(values["seq_lens"])))
        return cls(**values)

    def check(self) -> None:
        if self.mode not in ("forward", "train", "generate"):
            raise PulseError(f"mode `{self.mode}` is not one of forward, train, generate.")
        if not self.seq_lens or min(self.seq_lens) < 1:
            raise PulseError(f"sequence lengths must be ≥ 1, got {list(self.seq_lens)}.")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise PulseError(f"--device {self.device}, but this torch build sees no CUDA device; use --device cpu.")
        elif self.device != "cpu":
            raise PulseError(f"--device `{self.device}`: use cpu or cuda (cuda:N for one GPU).")


def recipe_system(recipe: Any, name: str | None = None) -> System:
    """A whole model from a validated recipe; the worker re-validates the resolved recipe dict."""
    source = recipe.source or "<recipe>"
    label = name or os.path.splitext(os.path.basename(source.split(" (")[0]))[0] or "recipe"
    return System(label, {"type": "recipe", "recipe": recipe.to_dict(), "source": source, "hash": recipe.hash()})


def parse_mixer(text: str) -> tuple[str, dict[str, Any]]:
    """`KIND` or `KIND:key=value,key=value` (values read as TOML) → (kind, params)."""
    from pulse.specs.load import parse_override

    kind, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", rest) if rest.strip() else []:
        parts, value = parse_override(item)
        node = params
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return kind.strip(), params


def mixer_system(text: str, dim: int) -> System:
    """A single registered mixer at width `dim`, validated now by building it on the meta device."""
    from pulse.assemble import build_mixer, make_spec

    kind, params = parse_mixer(text)
    if not kind:
        raise PulseError(f"--mixer `{text}`: name a registered kind, e.g. --mixer attention or --mixer pulse:gate=mingru.")
    build_mixer(kind, dim, device="meta", **params)
    spec = make_spec(kind, "mixer", **params).model_dump(mode="json")
    return System(text, {"type": "mixer", "kind": kind, "params": params, "dim": dim, "spec": spec})


def spawn(request: dict[str, Any], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker process; its JSON result, or a skipped/failed record saying why."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulse.bench.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        stdout, stderr = proc.communicate(json.dumps(request), timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"pid": proc.pid, "status": "skipped", "reason": f"timeout: took longer than {timeout:.3g} s",
                "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        why = " (likely the out-of-memory killer)" if sig == "SIGKILL" else ""
        return {"pid": proc.pid, "status": "skipped", "reason": f"killed by {sig}{why}", "wall_s": wall}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"pid": proc.pid, "status": "failed", "reason": f"worker exited with {proc.returncode}: {tail}",
                "stderr": stderr[-4000:], "wall_s": wall}
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    if settings.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(settings.threads)
    return env


@dataclass
class _Clock:
    budget: float | None
    start: float = field(default_factory=time.perf_counter)

    def remaining(self) -> float | None:
        return None if self.budget is None else self.budget - (time.perf_counter() - self.start)


def _limit(settings: Settings, clock: _Clock) -> tuple[float, bool]:
    """Timeout for the next process, and whether the budget (not --timeout) sets it."""
    left = clock.remaining()
    if left is not None and left < settings.timeout:
        return left, True
    return settings.timeout, False


def _measure_request(system: System, seq_len: int, settings: Settings) -> dict[str, Any]:
    keys = ("batch", "mode", "repeats", "warmup", "generate_tokens", "dtype", "device", "threads", "max_memory_gb", "seed")
    return {"task": "measure", "system": system.spec, "seq_len": seq_len, **{k: getattr(settings, k) for k in keys}}


def measure_machine(settings: Settings, clock: _Clock, env: dict[str, str]) -> dict[str, Any]:
    from pulse.bench.machine import cpu_model

    timeout, by_budget = _limit(settings, clock)
    request = {"task": "machine", "device": settings.device, "dtype": settings.dtype, "threads": settings.threads,
               "matmul_size": settings.matmul_size, "repeats": max(3, settings.repeats), "seed": settings.seed}
    if settings.matmul_size == 0:
        result = {"status": "skipped", "reason": "not measured (--matmul-size 0)"}
    elif timeout <= 0:
        result = {"status": "skipped", "reason": "the --max-seconds budget was spent"}
    else:
        result = spawn(request, timeout, env)
        if by_budget and result["status"] == "skipped" and result["reason"].startswith("timeout"):
            result["reason"] = f"stopped at the --max-seconds budget ({settings.max_seconds:g} s)"
    if result["status"] != "ok":
        result.update(cpu=cpu_model(), logical_cpus=os.cpu_count(), threads=settings.threads, device=settings.device,
                      matmul=None)
    return result


def run_bench(
    systems: Sequence[System],
    settings: Settings,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure every system at every length; the JSON-ready document `pulse.bench.report` prints and plots."""
    if not systems:
        raise PulseError("nothing to benchmark; give a recipe or at least one --mixer.")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise PulseError(f"systems need distinct names, got {names}; compare each recipe or mixer variant once.")
    settings.check()
    clock, env = _Clock(settings.max_seconds), _env(settings)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = measure_machine(settings, clock, env)
    runs: list[dict[str, Any]] = []
    blocked: dict[str, str] = {}
    for seq_len in settings.seq_lens:
        for round_ in range(settings.rounds):
            for system in systems:
                run = _one(system, seq_len, round_, settings, clock, env, blocked)
                runs.append(run)
                if progress is not None:
                    progress(run)
    return {
        "schema": SCHEMA,
        "created": started,
        "command": command,
        "elapsed_s": time.perf_counter() - clock.start,
        "settings": {**asdict(settings), "seq_lens": list(settings.seq_lens)},
        "machine": machine,
        "baseline": systems[0].name,
        "systems": [summarize_system(s, runs, settings, machine, systems[0].name) for s in systems],
        "runs": runs,
    }


def _one(system: System, seq_len: int, round_: int, settings: Settings, clock: _Clock, env: dict[str, str],
         blocked: dict[str, str]) -> dict[str, Any]:
    where = {"system": system.name, "seq_len": seq_len, "round": round_}
    if system.name in blocked:
        return {**where, "status": "skipped", "reason": blocked[system.name]}
    timeout, by_budget = _limit(settings, clock)
    if timeout <= 0:
        return {**where, "status": "skipped", "reason": f"the --max-seconds budget ({settings.max_seconds:g} s) was spent"}
    result = spawn(_measure_request(system, seq_len, settings), timeout, env)
    if by_budget and result["status"] == "skipped" and result["reason"].startswith("timeout"):
        result["reason"] = f"stopped at the --max-seconds budget ({settings.max_seconds:g} s)"
    if result["status"] != "ok":
        blocked[system.name] = f"not tried: {_cause(result['reason'])} at seq_len {seq_len}"
    return {**where, **result}


def _cause(reason: str) -> str:
    """The gist of a skip or failure reason, for the lengths after it."""
    for gist in ("out of memory", "timeout", "--max-seconds budget", "killed by"):
        if gist in reason:
            return gist
    return "failed" if len(reason) > 60 else reason


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_system(system: System, runs: list[dict[str, Any]], settings: Settings, machine: dict[str, Any],
                     baseline: str) -> dict[str, Any]:
    """Per length: times pooled over rounds, tokens/s, memory, FLOP/s, and pair-by-pair ratios to the baseline."""
    ceiling = (machine.get("matmul") or {}).get("gflops")
    mine = [r for r in runs if r["system"] == system.name]
    results = []
    for seq_len in settings.seq_lens:
        here = [r for r in mine if r["seq_len"] == seq_len]
        ok = [r for r in here if r["status"] == "ok"]
        entry: dict[str, Any] = {"seq_len": seq_len, "pids": [r["pid"] for r in here if "pid" in r]}
        if not ok:
            first = here[0] if here else {"status": "skipped", "reason": "not measured"}
            entry.update(status=first["status"], reason=first["reason"])
            results.append(entry)
            continue
        times = [t for r in ok for t in r["times_s"]]
        spread = _spread(times)
        unit = ok[0]["unit"]
        median = spread["median"]
        tokens = settings.batch * (seq_len if unit == "batch" else 1)
        achieved = ok[0]["flops"] / median / 1e9
        entry.update(
            status="ok",
            unit=unit,
            time_s=spread,
            times_s=times,
            tokens_per_s=tokens / median,
            memory_bytes=max(r["memory_bytes"] for r in ok),
            memory_kind=ok[0]["memory_kind"],
            flops=ok[0]["flops"],
            achieved_gflops=achieved,
            matmul_fraction=achieved / ceiling if ceiling else None,
            rounds_ok=len(ok),
            ratio=_ratios(system.name, baseline, seq_len, runs),
        )
        if unit == "token":
            entry["prefill_s"] = statistics.median(r["prefill_s"] for r in ok)
        results.append(entry)
    ok = [r for r in results if r["status"] == "ok" and (settings.fit_from is None or r["seq_len"] >= settings.fit_from)]
    lens = [r["seq_len"] for r in ok]
    time_fit = fit_scaling(lens, [r["time_s"]["median"] for r in ok])
    mem_fit = fit_scaling(lens, [r["memory_bytes"] for r in ok]) if all(r["memory_bytes"] > 0 for r in ok) else None
    params = next((r["params"] for r in runs if r["system"] == system.name and r["status"] == "ok"), None)
    spec = {k: v for k, v in system.spec.items() if k != "recipe"}
    return {
        "name": system.name,
        "system": spec,
        "params": params,
        "results": results,
        "scaling": time_fit.to_dict() if time_fit else None,
        "local_exponents": local_exponents(lens, [r["time_s"]["median"] for r in ok]),
        "memory_scaling": mem_fit.to_dict() if mem_fit else None,
    }


def _ratios(name: str, baseline: str, seq_len: int, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Baseline time / this time (speed-up) and this memory / baseline memory, per round, then their spread."""
    speedups, memory = [], []
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        if r["seq_len"] == seq_len and r["status"] == "ok" and r["system"] in (name, baseline):
            by_round.setdefault(r["round"], {})[r["system"]] = r
    for pair in by_round.values():
        if name in pair and baseline in pair:
            mine, base = pair[name], pair[baseline]
            speedups.append(statistics.median(base["times_s"]) / statistics.median(mine["times_s"]))
            if base["memory_bytes"] > 0:
                memory.append(mine["memory_bytes"] / base["memory_bytes"])
    if not speedups:
        return None
    return {"speedup": _spread(speedups), "memory": _spread(memory), "pairs": len(speedups)}
