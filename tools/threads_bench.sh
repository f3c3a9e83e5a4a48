#!/bin/bash
# Issue 35's measure of a shared CPU: one layer, forward + backward at 8k, dim 256, six mixers side by side
# (pulse bench: fresh processes, 2 rounds x 2 repeats): quiet with the default thread choice, then beside one
# process spinning on CPU 1, with PULSE_THREADS=2 (torch's default before pulse.threads) and with the default.
# Prints each mixer's slowdown (busy / quiet median) and that slowdown over attention's. Run it on a quiet machine.
# Usage: OUT=DIR tools/threads_bench.sh   (JSON and text reports in DIR, default /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
M=(--mixer attention --mixer gated_deltanet --mixer pulse --mixer ssm --mixer pulse_routed --mixer rwkv7)
B=(--seq-lens 8k --mode train --dim 256 --rounds 2 --repeats 2 --warmup 1 --compile off --timeout 120)
bench() { .venv/bin/pulse bench "${M[@]}" "${B[@]}" --json "$OUT/tb-$1.json" > "$OUT/tb-$1.txt" 2>&1; }
(unset PULSE_THREADS; bench quiet)
taskset -c 1 python3 -c 'while True: pass' & SPIN=$!
trap 'kill $SPIN' EXIT
sleep 1
PULSE_THREADS=2 bench busy2
(unset PULSE_THREADS; bench busyauto)
OUT=$OUT .venv/bin/python - <<'PY'
import json, os, statistics

def medians(name):
    runs = json.load(open(os.path.join(os.environ["OUT"], f"tb-{name}.json")))["runs"]
    times, threads = {}, {}
    for r in runs:
        if r["status"] == "ok":
            times.setdefault(r["system"], []).extend(r["times_s"])
            threads[r["system"]] = r.get("threads")
    return {k: statistics.median(v) for k, v in times.items()}, threads

quiet, _ = medians("quiet")
for name in ("busy2", "busyauto"):
    busy, threads = medians(name)
    base = busy["attention"] / quiet["attention"]
    print(name)
    for k, q in quiet.items():
        if k in busy:
            s = busy[k] / q
            print(f"  {k:15s} quiet {q * 1e3:7.0f} ms  busy {busy[k] * 1e3:7.0f} ms ({threads[k]} threads)  "
                  f"slowdown {s:5.2f}x  / attention's {s / base:5.2f}")
PY
