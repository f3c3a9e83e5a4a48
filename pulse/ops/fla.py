"""Optional kernels from fla (flash-linear-attention, Triton) for linear attention on CUDA.

Installed with `pip install "pulse[gpu]"`. `pulse.ops.linear_attention.linear_attention`,
`pulse.ops.ssd.ssd` (Mamba-2's SSD is simple GLA), `pulse.ops.delta_rule.delta_rule` and
`pulse.ops.generalized_delta` (fla's `chunk_kda` for KDA, `chunk_rwkv7` — its diagonal-plus-low-rank
rule — for the rest) dispatch here for CUDA tensors when fla imports and PULSE_FLA is not 0; the project's own
`chunk_linear_attention` stays the reference (tests/test_backend_fla.py compares both where
CUDA and fla are present). fla's simple-GLA kernel computes o_t = q_t S_t with
S_t = exp(g_t) S_{t−1} + k_t v_tᵀ — PULSE's recurrence with g = log α — and the normaliser
rides along as a column of ones in v, exactly as in the eager chunked form.

# b batch · h heads · t time · k key dim · v value dim
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pulse.ops import backend


@functools.cache
def unavailable_reason() -> str | None:
    """None when fla's kernels import, else why not (shown in the path a call records)."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception as err:  # noqa: BLE001 — ImportError, or fla refusing this Triton/GPU at import
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    return None


def simple_gla(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    """fla's chunked simple GLA in PULSE's layout: q, k (b, h, t, k), v (b, h, t, v), log_decay (b, h, t),
    state (b, h, k, v) → out (b, h, t, v), final state (b, h, k, v). The scale is 1 (q arrives scaled)."""
    from fla.ops.simple_gla import chunk_simple_gla

    kwargs = {"scale": 1.0, "initial_state": state.float(), "output_final_state": True}
    if "head_first" in inspect.signature(chunk_simple_gla).parameters:
        kwargs["head_first"] = False
    q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # (b, t, h, ·)
    g = None if log_decay is None else log_decay.transpose(1, 2).contiguous().float()
    out, final = chunk_simple_gla(q, k, v, g=g, **kwargs)
    return out.transpose(1, 2), final.to(state.dtype)


def fla_ready(x: Tensor) -> bool:
    """Whether a call on x may try fla: a CUDA tensor and an importable fla."""
    return x.is_cuda and unavailable_reason() is None


@functools.cache
def probe(device: torch.device, dtype: torch.dtype, gated: bool) -> None:
    """Run a tiny forward and backward once per device, dtype and gating; raises what fla raises.

    Some refusals come only in the backward (fla 0.6 refuses Triton < 3.7.1 on Hopper for its
    gated backward), where a caller can no longer switch paths; the probe finds them up front.
    """
    q, k, v = (torch.rand(1, 1, 16, 16, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    g = -torch.rand(1, 1, 16, device=device, dtype=torch.float32) if gated else None
    out, final = simple_gla(q, k, v, g, torch.zeros(1, 1, 16, 16, device=device, dtype=dtype))
    (out.float().sum() + final.float().sum()).backward()


def gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor | None,
                     state: Tensor) -> tuple[Tensor, Tensor]:
    """fla's chunked (gated) delta rule in PULSE's layout: q, k (b, h, t, k), v (b, h, t, v), beta and
    log_decay (b, h, t), state (b, h, k, v) → out (b, h, t, v), final state. Scale 1: q arrives as used."""
    tr = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731 — (b, h, t, ·) → (b, t, h, ·)
    kwargs = {"scale": 1.0, "initial_state": state.float(), "output_final_state": True}
    if log_decay is None:
        from fla.ops.delta_rule import chunk_delta_rule as kernel
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as kernel

        kwargs["g"] = tr(log_decay).float()
    if "head_first" in inspect.signature(kernel).parameters:
        kwargs["head_first"] = False
    out, final = kernel(tr(q), tr(k), tr(v), beta=tr(beta), **kwargs)
    return out.transpose(1, 2), final.to(state.dtype)


@functools.cache
def probe_delta(device: torch.device, dtype: torch.dtype, gated: bool) -> None:
    """`probe` for the delta rule: a tiny forward and backward, so refusals surface before the real call."""
    q, k, v = (torch.rand(1, 1, 16, 16, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    beta = torch.rand(1, 1, 16, device=device, dtype=dtype)
    g = -torch.rand(1, 1, 16, device=device, dtype=torch.float32) if gated else None
    out, final = gated_delta_rule(q, k / 4, v, beta, g, torch.zeros(1, 1, 16, 16, device=device, dtype=dtype))
    (out.float().sum() + final.float().sum()).backward()


def kda(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """fla's chunked KDA in PULSE's layout: q, k, log_alpha (b, h, t, k), v (b, h, t, v), beta (b, h, t), state
    (b, h, k, v) → out, final state. S_t = (I − β k kᵀ) Diag(e^{log α}) S_{t−1} + β k vᵀ; scale 1 (q arrives
    scaled)."""
    from fla.ops.kda import chunk_kda

    tr = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731 — (b, h, t, ·) → (b, t, h, ·)
    out, final = chunk_kda(tr(q), tr(k), tr(v), g=tr(log_alpha).float(), beta=tr(beta), scale=1.0,
                           initial_state=state.float(), output_final_state=True)
    return out.transpose(1, 2), final.to(state.dtype)


def dplr(q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """fla's chunked diagonal-plus-low-rank delta rule (`chunk_rwkv7`) in PULSE's layout and notation,
    S_t = (Diag(e^{log w}) + a bᵀ) S_{t−1} + k vᵀ: fla reads along its `a` and writes along its `b`, so
    PULSE's b (the read) is fla's a and PULSE's a (the write) fla's b. Scale 1."""
    from fla.ops.rwkv7 import chunk_rwkv7

    tr = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731
    out, final = chunk_rwkv7(tr(q), tr(log_w).float(), tr(k), tr(v), tr(b), tr(a), scale=1.0,
                             initial_state=state.float(), output_final_state=True)
    return out.transpose(1, 2), final.to(state.dtype)


@functools.cache
def probe_generalized(device: torch.device, dtype: torch.dtype, kind: str) -> None:
    """`probe` for `kda` / `dplr`: a tiny forward and backward before the real call."""
    shape = (1, 1, 16, 16)
    q, v = (torch.rand(*shape, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    k = torch.nn.functional.normalize(torch.rand(*shape, device=device, dtype=dtype), dim=-1).requires_grad_(True)
    log_w = -torch.rand(*shape, device=device, dtype=torch.float32)
    s0 = torch.zeros(1, 1, 16, 16, device=device, dtype=dtype)
    if kind == "kda":
        out, final = kda(q, k, v, torch.rand(1, 1, 16, device=device, dtype=dtype), log_w, s0)
    else:
        out, final = dplr(q, k, v, -k / 2, k, log_w, s0)
    (out.float().sum() + final.float().sum()).backward()


def dispatch(op: str, x: Tensor, probe_call: Callable[[], None], kernel: Callable[[], Any]) -> Any | None:
    """`backend.dispatch` for fla (switch PULSE_FLA): the kernel's result, or None where eager should run."""
    return backend.dispatch(op, "fla", "PULSE_FLA", x, fla_ready(x), unavailable_reason, probe_call, kernel)
