"""Optional CUDA kernel from mamba-ssm (state-spaces/mamba) for the selective scan of `ssm`.

Installed with `pip install "pulse[mamba]"` (mamba-ssm builds or fetches a CUDA extension that
matches the installed torch). `pulse.ops.selective_scan.selective_scan` dispatches here for CUDA
tensors when mamba-ssm imports, PULSE_MAMBA is not 0 and the scan starts from a zero state (the
kernel takes no initial state; a call that continues a state runs the eager form). The fused
kernel keeps the (d × n) state in registers and never writes the per-token states to memory,
which is what the eager chunked form cannot avoid. PULSE's `selective_scan` stays the reference
(tests/test_backend_fla.py compares both where CUDA and mamba-ssm are present).

mamba-ssm's layout is channels first: u, Δ (b, d, t); A (d, n) in float32; B, C (b, n, t) in the
input's dtype (one group, varying with the token). It returns y (b, d, t) and the last state.

# b batch · t time · d channels · n state size
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from pulse.ops import backend


@functools.cache
def unavailable_reason() -> str | None:
    """None when mamba-ssm's selective scan imports, else why not (shown in the path a call records)."""
    try:
        kernel()
    except Exception as err:  # noqa: BLE001 — ImportError, or its CUDA extension failing to load
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    return None


def kernel() -> Callable:
    """mamba-ssm's `selective_scan_fn` (imported on first use: the package is optional)."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """The kernel in PULSE's layout, from a zero state: x, dt (b, t, d); A (d, n); B, C (b, t, n)
    → y (b, t, d) and the state after the last token (b, d, n), both in x's dtype."""
    channels_first = lambda z: z.to(x.dtype).transpose(1, 2).contiguous()  # noqa: E731 — (b, t, ·) → (b, ·, t)
    y, last = kernel()(
        channels_first(x), channels_first(dt), A.float(), channels_first(B), channels_first(C), return_last_state=True
    )
    return y.transpose(1, 2), last.to(x.dtype)


def ready(x: Tensor) -> bool:
    """Whether a call on x may try mamba-ssm: a CUDA tensor and an importable kernel."""
    return x.is_cuda and unavailable_reason() is None


@functools.cache
def probe(device: torch.device, dtype: torch.dtype) -> None:
    """A tiny forward and backward once per device and dtype; raises what the kernel raises."""
    x, dt, B, C = (torch.rand(1, 8, 4, device=device, dtype=dtype, requires_grad=True) for _ in range(4))
    A = -torch.rand(4, 4, device=device, requires_grad=True)
    y, last = selective_scan(x, dt, A, B, C)
    (y.float().sum() + last.float().sum()).backward()


def dispatch(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor] | None:
    """`backend.dispatch` for the selective scan (switch PULSE_MAMBA): y and the last state, or None
    where the eager form should run."""
    return backend.dispatch(
        "selective_scan", "mamba-ssm", "PULSE_MAMBA", x, ready(x), unavailable_reason,
        lambda: probe(x.device, x.dtype), lambda: selective_scan(x, dt, A, B, C),
    )
