#!/usr/bin/env bash
# Wheels for running tools/gpu_bench.sh on an offline GPU machine whose Python already has torch,
# Triton, numpy, typer, rich, einops and transformers (a typical CUDA image): PULSE's remaining
# runtime needs (pydantic and its parts, torchinfo) and fla with fla-core (the `gpu` extra), each
# without its dependencies, for that machine's Python and platform.
#
#   tools/gpu_wheels.sh [DIR]              # default .whl; PYVER (3.12) and PLATFORMS override
#   WHEELS=DIR tools/gpu_bench.sh          # there: installs them into a private site dir first
#
# And, into DIR-tilelang, TileLang with the parts of it such an image lacks (apache-tvm-ffi,
# torch-c-dlpack-ext, z3-solver; it has cloudpickle, ml-dtypes, psutil, tqdm): fla 0.6 refuses its
# gated backward on Hopper with Triton in [3.4, 3.7.1) (its #640) unless TileLang is importable and
# nvcc is present, and then runs that kernel through TileLang. Those wheels are about 80 MB, more
# than one device call may carry (64 MiB) beside DIR: carry DIR-tilelang in a first call that only
# installs it (WHEELS=DIR-tilelang INSTALL_ONLY=1 tools/gpu_bench.sh), then DIR in the bench call, on
# the same warm machine (both install into /tmp/pulse-site). NO_TILELANG=1 skips them.
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
if [ -z "${NO_TILELANG:-}" ]; then
  ${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${args[@]}" --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    -d "$dir-tilelang" "tilelang==0.1.15" "apache-tvm-ffi>=0.1.11,<0.1.13" torch-c-dlpack-ext \
    "z3-solver>=4.13.0,<4.15.5"
  ls "$dir-tilelang"
fi
