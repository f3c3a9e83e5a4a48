#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md (BENCH.md's GPU targets) as one script, for a machine with
# one CUDA GPU: every linear-time mixer against SDPA attention at dim 1024, 16 heads, bf16, batch 1,
# forward + backward + step, with the path each took (eager / compiled / fla / mamba-ssm), then the
# parity tests that need CUDA (and fla or mamba-ssm, where `pip install -e ".[gpu,mamba]"` installed them).
#
#   tools/gpu_bench.sh [OUT_DIR]        # default docs/bench/gpu; the bench stops at --max-seconds 420 (BUDGET), then the tests run
#
# DEVICE, DTYPE, DIM, HEADS, LENS, BUDGET override the defaults, e.g. a dry run on a CPU:
#   DEVICE=cpu DTYPE=float32 DIM=64 HEADS=4 LENS=256 tools/gpu_bench.sh /tmp/gpu-dry
# PYTHON names the interpreter (default python3). On a machine that cannot reach a package index,
# WHEELS=DIR (made by tools/gpu_wheels.sh) installs those wheels into a private site directory
# first, and the source tree runs as `python -m pulse` without being installed; INSTALL_ONLY=1 stops
# after the install (for DIR-tilelang, carried in a call of its own: see tools/gpu_wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pulse-site "$WHEELS"/*.whl
  if [ -n "${INSTALL_ONLY:-}" ]; then ls /tmp/pulse-site; exit 0; fi
fi
if [ -d /tmp/pulse-site ]; then export PYTHONPATH="/tmp/pulse-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"; fi
"$python" -c "import importlib.util as u; print('tilelang', 'present' if u.find_spec('tilelang') else 'absent')"
out=${1:-docs/bench/gpu}
mkdir -p "$out"
device=${DEVICE:-cuda}
dtype=${DTYPE:-bfloat16}
dim=${DIM:-1024}
heads=${HEADS:-16}
lens=${LENS:-2k,8k,32k}
budget=${BUDGET:-420}
"$python" - <<EOF
import torch
print("torch", torch.__version__, "· cuda", torch.version.cuda, "·", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
EOF
# a length that would not finish inside --timeout is skipped with the reason, not waited for; the first
# process of a system with compiled steps also compiles them (tens of seconds), hence 180 s, not less
"$python" -m pulse bench --mixer "attention:num_heads=$heads" --mixer "linear_attention:num_heads=$heads" \
  --mixer "pulse:gate=mingru,num_heads=$heads" --mixer "pulse:gate=gru,num_heads=$heads" \
  --mixer "pulse:gate=lstm,num_heads=$heads" --mixer ssm --mixer "mamba2:num_heads=$((2 * dim / 64))" \
  --mixer "gated_deltanet:num_heads=$heads" --mixer "kda:num_heads=$heads" \
  --mixer "gated_deltaproduct:num_heads=$heads" --mixer "rwkv7:num_heads=$heads" \
  --mixer "pulse_routed:num_heads=$heads" --mixer "gated_deltanet2:num_heads=$heads" --mixer "rglru:num_heads=$heads" \
  --mixer "mlstm:num_heads=$heads" --mixer "forgetting_attention:num_heads=$heads" \
  --dim "$dim" --device "$device" --dtype "$dtype" --mode train --seq-lens "$lens" \
  --repeats 5 --warmup 2 --timeout 180 --max-seconds "$budget" --matmul-size 0 \
  --json "$out/gpu-train.json" --text "$out/gpu-train.txt"
# fla and mamba-ssm against the project's own ops, and compiled steps against eager (skip with the
# reason where CUDA or the library is missing)
"$python" -m pytest -q -p no:cacheprovider tests/test_backend_fla.py tests/test_backend_mamba.py tests/test_backend.py -rs
