"""What machine a benchmark ran on, and how fast it multiplies dense matrices.

The matmul throughput is the practical ceiling a model's achieved FLOP/s is compared
with; it is measured in a fresh process with the same threads, device and dtype as
the measurements themselves.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def describe(device: str) -> dict[str, Any]:
    """CPU, threads, library versions and accelerator, as seen by this process."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": cpu_model(),
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def matmul_gflops(*, size: int, device: str, dtype: str, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of a (size × size) @ (size × size) product: median, min and max over `repeats` after a warm-up."""
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    flops = 2.0 * size**3
    torch.mm(a, b)
    sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        rates.append(flops / (time.perf_counter() - start) / 1e9)
    return {
        "size": size,
        "dtype": dtype,
        "repeats": repeats,
        "gflops": statistics.median(rates),
        "gflops_min": min(rates),
        "gflops_max": max(rates),
    }
