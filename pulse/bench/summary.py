"""From a run's raw measurements to what a report shows: pooled times, ratios pair by pair, fits, paths."""

from __future__ import annotations

import statistics
from typing import Any

from pulse.bench import plan
from pulse.bench.fit import fit_scaling, local_exponents


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_system(system: Any, runs: list[dict[str, Any]], settings: Any, machine: dict[str, Any],
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
            path=plan.paths_summary(ok),
            threads=sorted({r["threads"] for r in ok if r.get("threads")}),
            ratio=_ratios(system.name, baseline, seq_len, runs),
        )
        if unit == "token":
            entry["prefill_s"] = statistics.median(r["prefill_s"] for r in ok)
        results.append(entry)
    ok = [
        r for r in results if r["status"] == "ok" and (settings.fit_from is None or r["seq_len"] >= settings.fit_from)
    ]
    lens = [r["seq_len"] for r in ok]
    time_fit = fit_scaling(lens, [r["time_s"]["median"] for r in ok])
    mem_fit = fit_scaling(lens, [r["memory_bytes"] for r in ok]) if all(r["memory_bytes"] > 0 for r in ok) else None
    params = next((r["params"] for r in runs if r["system"] == system.name and r["status"] == "ok"), None)
    spec = {k: v for k, v in system.spec.items() if k != "recipe"}
    return {
        "name": system.name,
        "path": plan.paths_summary([r for r in mine if r["status"] == "ok"]),
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
