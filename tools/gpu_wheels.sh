#!/usr/bin/env bash
# Wheels for running tools/gpu_bench.sh on an offline GPU machine whose Python already has torch,
# Triton, numpy, typer, rich, einops and transformers (a typical CUDA image): PULSE's remaining
# runtime needs (pydantic and its parts, torchinfo) and fla with fla-core (the `gpu` extra), each
# without its dependencies, for that machine's Python and platform.
#
#   tools/gpu_wheels.sh [DIR]              # default .whl; PYVER (3.12) and PLATFORMS override
#   WHEELS=DIR tools/gpu_bench.sh          # there: installs them into a private site dir first
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
pyver=${PYVER:-3.12}
platforms=${PLATFORMS:-"manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64"}
args=()
for p in $platforms; do args+=(--platform "$p"); done
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp "${args[@]}" -d "$dir" \
  "pydantic>=2.6,<3" pydantic-core annotated-types typing-inspection "torchinfo>=1.8" \
  "flash-linear-attention==0.6.0" "fla-core==0.6.0"
ls "$dir"
