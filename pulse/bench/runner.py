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

from pulse.bench import plan
from pulse.bench.schema import SCHEMA
from pulse.bench.summary import summarize_system
from pulse.errors import PulseError


@dataclass(frozen=True)
class System:
    """Something to measure: `spec` is what the worker builds (a recipe dict, or a mixer kind with params)."""

    name: str
    spec: dict[str, Any]


def parse_lengths(text: str, option: str = "--seq-lens") -> list[int]:
    """`512,1k,16k,1m` → [512, 1024, 16384, 1048576] (k = 2¹⁰, m = 2²⁰): the one reader of lengths written for
    people (`pulse bench --seq-lens`, and the evaluations' lengths in pulse.evaluation); errors name `option`."""
    out = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        scale = {"k": 2**10, "m": 2**20}.get(item[-1].lower(), 1)
        try:
            out.append(int(item[:-1] if scale > 1 else item) * scale)
        except ValueError:
            raise PulseError(f"{option} `{text}`: `{item}` is not a length; write e.g. 512,1024,2k.") from None
    if not out:
        raise PulseError(f"{option} is empty; write e.g. {option} 512,1024,2048.")
    return out


def _spec_default(name: str) -> Any:
    from pulse.specs.bench import BenchSpec

    return BenchSpec.model_fields[name].default


FLAG_NAMES = {"max_memory_gb": "max-memory"}  # a setting whose flag is not its name with dashes
NO_FLAG = ("seq_lens", "guard", "seed")  # spelled otherwise (--seq-lens a,b; --no-guard) or not a flag


@dataclass(frozen=True)
class Settings:
    """What `pulse bench` measures: a recipe's [bench] fields (their defaults are BenchSpec's), then the
    command line's machine settings. `flags()` spells them as the command that repeats a run."""

    seq_lens: tuple[int, ...]
    batch: int = _spec_default("batch")
    mode: str = _spec_default("mode")
    repeats: int = _spec_default("repeats")
    warmup: int = _spec_default("warmup")
    rounds: int = _spec_default("rounds")
    generate_tokens: int = _spec_default("generate_tokens")
    dtype: str = _spec_default("dtype")
    device: str = "cpu"
    threads: int | None = None
    max_seconds: float | None = _spec_default("max_seconds")
    timeout: float = _spec_default("timeout")
    max_memory_gb: float | None = None
    matmul_size: int = 2048
    fit_from: int | None = None
    seed: int = 0
    # project each length's time and memory from the lengths before it, and skip what would not fit
    guard: bool = True

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> "Settings":
        """Settings from a recipe's BenchSpec, with every override that is not None taking precedence
        (`seq_lens` may be written as people do, e.g. "512,1k,4k")."""
        values = {name: getattr(spec, name) for name in cls.__dataclass_fields__ if hasattr(spec, name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values["seq_lens"], str):
            values["seq_lens"] = parse_lengths(values["seq_lens"])
        values["seq_lens"] = tuple(sorted(set(values["seq_lens"])))
        return cls(**values)

    def flags(self) -> list[str]:
        """Every setting as command-line words: --seq-lens a,b, --batch 1, …, --no-guard when it is off."""
        words = ["--seq-lens", ",".join(map(str, self.seq_lens))]
        for name, value in asdict(self).items():
            if name not in NO_FLAG and value is not None:
                flag = FLAG_NAMES.get(name, name.replace("_", "-"))
                words += [f"--{flag}", f"{value:g}" if isinstance(value, float) else str(value)]
        return words + ([] if self.guard else ["--no-guard"])

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
    from pulse.specs.load import parse_override, set_path

    kind, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", rest) if rest.strip() else []:
        parts, value = parse_override(item)
        set_path(params, parts, value, item)
    return kind.strip(), params


def mixer_system(text: str, dim: int) -> System:
    """A single registered mixer at width `dim`, validated now by building it on the meta device."""
    from pulse.assemble import build_mixer, make_spec

    kind, params = parse_mixer(text)
    if not kind:
        raise PulseError(
            f"--mixer `{text}`: name a registered kind, e.g. --mixer attention or --mixer pulse:gate=mingru."
        )
    build_mixer(kind, dim, device="meta", **params)
    spec = make_spec(kind, "mixer", **params).model_dump(mode="json")
    return System(text, {"type": "mixer", "kind": kind, "params": params, "dim": dim, "spec": spec})


COMPILE_CHOICES = ("auto", "on", "off", "both")


def with_documents(systems: Sequence[System], counts: Sequence[int]) -> list[System]:
    """The systems with N documents packed per window (`doc_starts` at N−1 seeded random positions after 0):
    each system once per count, side by side (0: no boundaries)."""
    if any(n < 0 for n in counts) or not counts:
        raise PulseError(f"--docs-per-window: give counts ≥ 0 (0: no document starts), got {list(counts)}.")
    if list(counts) == [0]:
        return list(systems)
    return [System(f"{s.name} · {n} doc{'s' if n != 1 else ''}" if n else f"{s.name} · no docs",
                   {**s.spec, "docs_per_window": n} if n else dict(s.spec))
            for s in systems for n in counts]


def with_compile(systems: Sequence[System], choice: str) -> list[System]:
    """The systems under a compile choice: `auto` as they are (PULSE_COMPILE decides), `on`/`off` for all
    of them, `both` each twice in a row, eager then compiled, so the two paths are timed side by side."""
    if choice not in COMPILE_CHOICES:
        raise PulseError(f"--compile {choice}: choose one of {', '.join(COMPILE_CHOICES)}.")
    if choice == "auto":
        return list(systems)
    if choice != "both":
        return [System(s.name, {**s.spec, "compile": choice == "on"}) for s in systems]
    return [System(f"{s.name} · {label}", {**s.spec, "compile": flag})
            for s in systems for label, flag in (("eager", False), ("compiled", True))]


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
    keys = (
        "batch", "mode", "repeats", "warmup", "generate_tokens", "dtype", "device", "threads", "max_memory_gb", "seed"
    )
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
        import platform

        import torch

        # what the workers run with, even when nothing was timed: their threads (None: each chooses from the
        # free CPUs, and its run records what it chose) and the library versions
        result.update(cpu=cpu_model(), logical_cpus=os.cpu_count(), threads=settings.threads,
                      torch=torch.__version__, python=platform.python_version(), device=settings.device, matmul=None)
    return result


def run_bench(
    systems: Sequence[System],
    settings: Settings,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    command: str | None = None,
    eta: Callable[[int, int, float | None], None] | None = None,
) -> dict[str, Any]:
    """Measure every system at every length; the JSON-ready document `pulse.bench.report` prints and plots.

    `progress(run)` hears each finished measurement; `eta(done, total, seconds_left)` hears the count
    and the projected time left (None until something has been measured) before and after each.
    Lengths projected past --timeout or the memory cap are skipped with the reason (`pulse.bench.plan`).
    """
    if not systems:
        raise PulseError("nothing to benchmark; give a recipe or at least one --mixer.")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise PulseError(f"systems need distinct names, got {names}; compare each recipe or mixer variant once.")
    settings.check()
    clock, env = _Clock(settings.max_seconds), _env(settings)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warnings = [w for w in (plan.load_warning(),) if w]
    machine = measure_machine(settings, clock, env)
    runs: list[dict[str, Any]] = []
    blocked: dict[str, str] = {}
    todo = [(s, n, r) for n in settings.seq_lens for r in range(settings.rounds) for s in systems]
    history: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
    formulas = {s.name: _formulas(s, settings) for s in systems}
    for i, (system, seq_len, round_) in enumerate(todo):
        if eta is not None:
            eta(
                i,
                len(todo),
                plan.eta(history, [(s.name, n) for s, n, _ in todo[i:]], plan.median_wall(runs), settings.timeout,
                         formulas),
            )
        run = _one(system, seq_len, round_, settings, clock, env, blocked, history[system.name], formulas[system.name])
        runs.append(run)
        history[system.name].append(run)
        if progress is not None:
            progress(run)
    if eta is not None:
        eta(len(todo), len(todo), 0.0)
    busy = [r["load_avg"] for r in runs if r.get("load_avg") is not None]
    if busy and not warnings and statistics.median(busy) > plan.LOAD_WARNING * (os.cpu_count() or 1):
        warnings.append(f"the machine was busy during the run: median load average {statistics.median(busy):.1f} on "
                        f"{os.cpu_count()} logical CPUs; ratios are less trustworthy than on a quiet machine")
    summaries = [summarize_system(s, runs, settings, machine, systems[0].name) for s in systems]
    doc = {
        "schema": SCHEMA,
        "created": started,
        "command": command,
        "elapsed_s": time.perf_counter() - clock.start,
        "settings": {**asdict(settings), "seq_lens": list(settings.seq_lens)},
        "machine": machine,
        "baseline": systems[0].name,
        "systems": summaries,
        "runs": runs,
    }
    doc["warnings"] = warnings + plan.spread_warnings(doc)
    return doc


def _formulas(system: System, settings: Settings) -> plan.SystemFormulas:
    """The system built on the meta device (no memory, no time), for its own cost formulas."""
    import torch

    from pulse.bench.measure import build_system

    model = build_system(system.spec, "meta", getattr(torch, settings.dtype))
    return plan.SystemFormulas(model, settings.batch, settings.mode, settings.dtype)


def _one(system: System, seq_len: int, round_: int, settings: Settings, clock: _Clock, env: dict[str, str],
         blocked: dict[str, str], history: list[dict[str, Any]], formulas: plan.SystemFormulas) -> dict[str, Any]:
    where = {"system": system.name, "seq_len": seq_len, "round": round_}
    if system.name in blocked:
        return {**where, "status": "skipped", "reason": blocked[system.name]}
    too_big = plan.check(formulas, history, seq_len, settings) if settings.guard else None
    if too_big is not None:
        blocked[system.name] = f"not tried: {_cause(too_big)} at seq_len {seq_len}"
        return {**where, "status": "skipped", "reason": too_big}
    timeout, by_budget = _limit(settings, clock)
    if timeout <= 0:
        return {
            **where, "status": "skipped", "reason": f"the --max-seconds budget ({settings.max_seconds:g} s) was spent"
        }
    result = spawn(_measure_request(system, seq_len, settings), timeout, env)
    if by_budget and result["status"] == "skipped" and result["reason"].startswith("timeout"):
        result["reason"] = f"stopped at the --max-seconds budget ({settings.max_seconds:g} s)"
    if result["status"] != "ok":
        blocked[system.name] = f"not tried: {_cause(result['reason'])} at seq_len {seq_len}"
    return {**where, **result}


def _cause(reason: str) -> str:
    """The gist of a skip or failure reason, for the lengths after it."""
    if reason.startswith(("projected", "needs at least")):
        return "projected past --timeout" if "--timeout" in reason else "projected past the memory cap"
    for gist in ("out of memory", "timeout", "--max-seconds budget", "killed by"):
        if gist in reason:
            return gist
    return "failed" if len(reason) > 60 else reason
