#!/usr/bin/env bash
# Reproduce the benchmark tables in docs/benchmarks.md (layer level, dim 256, fp32, batch 1,
# each (system, length) in a fresh process, systems interleaved; see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/bench}   # one folder per study under it (docs/bench/README.md)
mkdir -p "$out"/{layers-reference,cpu-8k,compile-cpu,ntm}
threads=${THREADS:-2}
core=(--mixer attention --mixer pulse --mixer pulse:chunk_size=32 --mixer pulse:gate=mingru
      --mixer linear_attention --mixer ssm --dim 256 --threads "$threads" --repeats 3)
# BENCH.md's comparison: forward+backward+step from 1k to 16k, and per-token generation.
pulse bench "${core[@]}" --mode train --seq-lens 1k,2k,4k,8k,16k --fit-from 2048 \
  --json "$out/layers-reference/layer-train.json" --plot "$out/layers-reference/layer-train.png" --text "$out/layers-reference/layer-train.txt"
pulse bench "${core[@]}" --mode generate --seq-lens 256,1k,4k,8k,16k \
  --json "$out/layers-reference/layer-generate.json" --plot "$out/layers-reference/layer-generate.png" --text "$out/layers-reference/layer-generate.txt"
# Every other mixer against attention at 1k, 4k, 8k (forward+backward+step).
pulse bench --mixer attention --mixer pulse:gate=lstm --mixer pulse_managed --mixer pulse_adaptive \
  --mixer hierarchical --mixer sparse_state_attention --mixer ntm --dim 256 --threads "$threads" --repeats 3 \
  --mode train --seq-lens 1k,4k,8k --timeout 300 \
  --json "$out/layers-reference/layer-others.json" --text "$out/layers-reference/layer-others.txt"
# Whole models: per-token generation of a pure PULSE LM vs a Transformer of similar size.
pulse bench recipes/pulse.toml --vs recipes/transformer.toml --vs recipes/hybrid.toml --threads "$threads" \
  --mode generate --seq-lens 256,2k,8k --json "$out/layers-reference/model-generate.json" --text "$out/layers-reference/model-generate.txt"
# The step-function mixers eager and compiled side by side (docs/benchmarks.md, "Eager and compiled").
pulse bench --mixer attention --mixer pulse --mixer pulse:gate=lstm --mixer hierarchical --mixer ntm --dim 256 \
  --seq-lens 2k,8k --mode train --repeats 2 --warmup 1 --threads "$threads" --timeout 300 --max-seconds 1500 \
  --compile both --json "$out/compile-cpu/layer-compile-cpu.json" --text "$out/compile-cpu/layer-compile-cpu.txt"
# The NTM with its hand-written token backward, eager and compiled, to 8k (docs/benchmarks.md, "NTM").
pulse bench --mixer attention --mixer ntm --dim 256 --seq-lens 2k,8k --mode train --repeats 2 --warmup 1 \
  --threads "$threads" --timeout 600 --max-seconds 1500 --compile both \
  --json "$out/ntm/layer-ntm-cpu.json" --text "$out/ntm/layer-ntm-cpu.txt"
# Every CPU target at 8k in one run, two rounds (docs/benchmarks.md, "Every CPU target at 8k").
pulse bench --mixer attention --mixer linear_attention --mixer ssm --mixer mamba2 --mixer gated_deltanet \
  --mixer deltanet --mixer pulse:gate=mingru --mixer pulse --mixer pulse:gate=lstm --mixer pulse_managed \
  --mixer pulse_adaptive --mixer hierarchical --mixer sparse_state_attention --dim 256 --seq-lens 8k --mode train \
  --repeats 3 --warmup 2 --rounds 2 --threads "$threads" --timeout 300 --max-seconds 1200 \
  --json "$out/cpu-8k/layer-8k-quiet.json" --text "$out/cpu-8k/layer-8k-quiet.txt"
pulse bench --mixer attention --mixer gated_deltanet --mixer deltanet --mixer hierarchical \
  --mixer sparse_state_attention --dim 256 --seq-lens 2k,4k,8k,16k --mode train --repeats 3 --warmup 2 --rounds 2 \
  --threads "$threads" --timeout 300 --max-seconds 1400 --fit-from 2048 \
  --json "$out/cpu-8k/layer-scaling-quiet.json" --text "$out/cpu-8k/layer-scaling-quiet.txt"
# The projection ceilings ("What the projections allow"): profiling, one process.
python tools/matmul_floor.py --mixer linear_attention --mixer ssm --mixer mamba2 --mixer gated_deltanet \
  --threads "$threads" | tee "$out/cpu-8k/matmul-floor-8k.txt"
# Per-token generation of the mixers not in the first generate table (docs/benchmarks.md, "Generation").
pulse bench --mixer attention --mixer gated_deltanet --mixer deltanet --mixer mamba2 --mixer hierarchical \
  --mixer sparse_state_attention --mixer pulse:gate=lstm --mixer pulse_managed --mixer pulse_adaptive --mixer ntm \
  --dim 256 --seq-lens 256,8k --mode generate --repeats 3 --warmup 1 --threads "$threads" --timeout 300 \
  --max-seconds 1200 --rounds 2 --json "$out/cpu-8k/layer-generate-others.json" --text "$out/cpu-8k/layer-generate-others.txt"
# The 2026 frontier kinds (#39) against attention and Gated DeltaNet at 8k: forward+backward+step, then per-token
# generation at 256 and 8k (docs/benchmarks.md, "The 2026 frontier").
mkdir -p "$out/frontier"
frontier=(--mixer attention --mixer gated_deltanet --mixer gated_deltanet2 --mixer rglru --mixer mlstm
          --mixer forgetting_attention --dim 256 --threads "$threads" --timeout 300)
pulse bench "${frontier[@]}" --seq-lens 8k --mode train --repeats 3 --warmup 2 --rounds 2 --max-seconds 1200 \
  --json "$out/frontier/frontier-8k-train.json" --text "$out/frontier/frontier-8k-train.txt"
pulse bench "${frontier[@]}" --seq-lens 256,8k --mode generate --repeats 3 --warmup 1 --rounds 2 --max-seconds 1200 \
  --json "$out/frontier/frontier-generate.json" --text "$out/frontier/frontier-generate.txt"
