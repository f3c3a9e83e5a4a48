#!/usr/bin/env bash
# Zoology's MQAR protocol at its full budget on one CUDA GPU (tools/zoology.py): every kind at widths
# 64/128/256 and learning rates logspace(-3, -1.5, 4), trained on the 180k-example mixture for 32
# epochs at batch 256 (22,500 steps a point), scored on the seven test settings, then
# docs/zoology.md and docs/zoology.png. A rerun skips finished points and resumes the rest, so a
# GPU lent for less time than the whole sweep (hours) finishes it over several calls.
#
#   tools/zoology_gpu.sh [OUT]                  # default runs/zoology-gpu
#   KINDS='gated_deltanet;kda' BUDGET=0.25 tools/zoology_gpu.sh   # fewer kinds, a quarter of the budget
#
# KINDS (default below: attention, gated_deltanet, kda at gated_deltanet's state, the routed PULSE memory
# at gated_deltanet's state, rwkv7, gated_deltaproduct), BUDGET (1), DIMS, LRS, PRECISION (bf16) and
# PARALLEL (1) override; DEVICE=cpu DOCS=/tmp/z … runs it small on a CPU as a dry run. WHEELS=DIR installs
# wheels first, as tools/gpu_bench.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pulse-site "$WHEELS"/*.whl
fi
if [ -d /tmp/pulse-site ]; then export PYTHONPATH="/tmp/pulse-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"; fi
out=${1:-runs/zoology-gpu}
kinds=${KINDS:-"attention;gated_deltanet;kda:num_heads=2,head_dim=64,expand_v=2.0;pulse_routed:num_memories=3,top_k=1,num_heads=2,head_dim=32,expand_v=2.0,chunk_size=64;rwkv7;gated_deltaproduct"}
args=(--protocol zoology --kinds "$kinds" --budget "${BUDGET:-1}" --parallel "${PARALLEL:-1}" --out "$out" --docs "${DOCS:-docs}"
      --set "train.device=${DEVICE:-cuda}" --set "train.precision=${PRECISION:-bf16}" --note "${NOTE:-one GPU, $(date -u +%F)}")
[ -n "${DIMS:-}" ] && args+=(--dims "$DIMS")
[ -n "${LRS:-}" ] && args+=(--lrs "$LRS")
"$python" tools/recall_table.py "${args[@]}"
