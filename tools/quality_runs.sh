#!/usr/bin/env bash
# Reproduce the quality figures in zoo/README.md: MQAR (64/4 and 128/8, d_model 128,
# 2 layers) for attention, pure PULSE and the hybrid, and bits per byte of the text
# recipe. Two queues run side by side with one torch thread each (2-core machine).
# Afterwards: python tools/zoo_table.py runs/quality > zoo/README.md
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quality}
mkdir -p "$out"
short=(--set task.seq_len=64 --set task.num_kv_pairs=4 --set train.batch_size=256)
one=(--set train.threads=1 --quiet)
run() { name=$1; shift; pulse train "$@" "${one[@]}" --out "$out/$name" > "$out/$name.log" 2>&1 || echo "$name failed (see $out/$name.log)"; }
(
  run mqar128-pulse recipes/mqar-pulse.toml
  run mqar64-attention recipes/mqar-attention.toml "${short[@]}"
  run text-hybrid recipes/text-hybrid.toml
) &
(
  run mqar128-hybrid recipes/mqar-hybrid.toml
  run mqar128-attention recipes/mqar-attention.toml
  run mqar64-pulse recipes/mqar-pulse.toml "${short[@]}"
  run mqar64-hybrid recipes/mqar-hybrid.toml "${short[@]}"
) &
wait
