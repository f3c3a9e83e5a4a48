"""Render `pulse bench --json` documents as markdown tables (for docs/benchmarks.md).

    python tools/bench_table.py docs/bench/layers-reference/layer-train.json [more.json …]
"""

from __future__ import annotations

import json
import sys


def fmt_ms(seconds: float, unit: str) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def render(path: str) -> str:
    doc = json.loads(open(path).read())
    m = doc["machine"]
    unit = "ms per new token" if doc["settings"]["mode"] == "generate" else "ms per batch"
    lines = [
        f"`{doc['command']}`",
        "",
        f"{m['cpu']} · {m['threads']} threads · torch {m['torch']} · {m['device']} {doc['settings']['dtype']} · "
        f"dense matmul {m['matmul']['gflops']:.0f} GFLOP/s (2048², median) · {doc['created'][:10]}",
        "",
    ]
    systems = doc["systems"]
    lens = [r["seq_len"] for r in systems[0]["results"]]
    header = "| system | params | " + " | ".join(f"T={t}" for t in lens) + " | k (time) |"
    lines += [f"{unit}, median of repeats (speed-up vs `{doc['baseline']}` pair by pair):", "", header,
              "|" + " --- |" * (len(lens) + 3)]
    for s in systems:
        cells = []
        for r in s["results"]:
            if r["status"] != "ok":
                cells.append(f"skipped ({r.get('reason', r['status'])})")
                continue
            ratio = (r.get("ratio") or {}).get("speedup", {}).get("median")
            extra = f" ({ratio:.2f}×)" if ratio is not None and s["name"] != doc["baseline"] else ""
            cells.append(fmt_ms(r["time_s"]["median"], unit) + extra)
        k = s.get("scaling") or {}
        exponent = f"{k['exponent']:.2f}" if k.get("exponent") is not None else "—"
        lines.append(f"| `{s['name']}` | {s['params']:,} | " + " | ".join(cells) + f" | {exponent} |")
    if doc["settings"]["mode"] != "generate":
        lines += ["", "Achieved fraction of the dense matmul throughput (analytic FLOPs):", "",
                  "| system | " + " | ".join(f"T={t}" for t in lens) + " |", "|" + " --- |" * (len(lens) + 1)]
        for s in systems:
            cells = [f"{100 * r['matmul_fraction']:.0f} %" if r["status"] == "ok" and r.get("matmul_fraction") else "—"
                     for r in s["results"]]
            lines.append(f"| `{s['name']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(render(p) for p in sys.argv[1:]))
