"""The fastest any form of a mixer could be: the time its dense 2-D products (the projections) take alone.

A mixer's projections (q/k/v/out, Mamba's in/x/dt/out, ...) are the same matmuls whatever form its
core takes, and attention has the same ones. So `attention layer time / mixer's projection time`
bounds the speed-up any rewrite of the mixer's core can reach. This tool measures both in one
process: it records every aten.mm / aten.addmm one forward + backward of the layer issues (shapes
and all), then times those products replayed alone on fresh tensors, interleaved with the whole
layer (layer, products, layer, products, ...), median of the repeats.

    python tools/matmul_floor.py --mixer linear_attention --mixer ssm --dim 256 --seq-len 8192

Profiling, not a `pulse bench` ratio: the layer times here have no optimizer step and share one
process. docs/benchmarks.md ("What bounds them") quotes its output.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pulse.assemble import build_mixer
from pulse.bench.machine import cpu_model

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}


class _Recorder(TorchDispatchMode):
    """Collects (op, argument shapes) of every 2-D matmul dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _MATMULS:
            self.calls.append((func, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def _layer_step(layer: torch.nn.Module, x: torch.Tensor) -> None:
    y = layer(x)
    (y[0] if isinstance(y, tuple) else y).square().mean().backward()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(kind: str, dim: int, seq_len: int, repeats: int) -> dict[str, float]:
    layer = build_mixer(kind, dim)
    x = torch.randn(1, seq_len, dim, requires_grad=True)
    _layer_step(layer, x)  # warm-up
    recorder = _Recorder()
    with recorder:
        _layer_step(layer, x)
    operands = [(func, [torch.randn(s) for s in shapes]) for func, shapes in recorder.calls]
    flops = sum(2.0 * shapes[-2][0] * shapes[-2][1] * shapes[-1][1] for _, shapes in recorder.calls)

    def products() -> None:
        for func, args in operands:
            func(*args)

    products()  # warm-up
    layer_s, products_s = [], []
    for _ in range(repeats):
        layer_s.append(_timed(lambda: _layer_step(layer, x)))
        products_s.append(_timed(products))
    return {"layer": statistics.median(layer_s), "products": statistics.median(products_s),
            "gflop": flops / 1e9, "calls": len(operands)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixer", action="append", required=True, help="a registered mixer kind; repeat for more")
    parser.add_argument("--baseline", default="attention")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{cpu_model()} · {torch.get_num_threads()} threads · torch {torch.__version__}"
          f" · dim {args.dim} · T {args.seq_len} · forward + backward, median of {args.repeats}")
    base = measure(args.baseline, args.dim, args.seq_len, args.repeats)
    print("| mixer | layer ms | its 2-D matmuls alone ms (GFLOP, calls) | matmul share | ceiling on speed-up vs "
          f"{args.baseline} |\n| --- | ---: | ---: | ---: | ---: |")
    for kind in [args.baseline, *args.mixer]:
        r = base if kind == args.baseline else measure(kind, args.dim, args.seq_len, args.repeats)
        ceiling = base["layer"] / r["products"]
        print(f"| `{kind}` | {r['layer'] * 1e3:,.0f} | {r['products'] * 1e3:,.0f} ({r['gflop']:.1f}, {r['calls']}) | "
              f"{r['products'] / r['layer']:.0%} | {ceiling:.1f}× |")


if __name__ == "__main__":
    main()
