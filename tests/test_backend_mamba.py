"""mamba-ssm's selective-scan kernel behind `selective_scan`: the dispatch everywhere, the kernel where CUDA is.

On the CPU the kernel is replaced by `_documented_kernel`, mamba-ssm's `selective_scan_fn` contract
written out as a loop (channels-first layout, A in float32, B and C in the input's dtype), so the
layout PULSE hands over, the path it records and the fallbacks are checked on every machine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_grads_close
from pulse import contract
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.ops import backend
from pulse.ops import mamba as pulse_mamba
from pulse.ops.selective_scan import selective_scan, selective_scan_reference


def _documented_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """selective_scan_fn as documented: u, Δ (b, d, t); A (d, n) float32; B, C (b, n, t) → y, last (b, d, n)."""
    assert u.dim() == 3 and u.shape == delta.shape and B.shape == C.shape == (u.shape[0], A.shape[1], u.shape[2])
    assert A.dtype == torch.float32 and B.dtype == C.dtype == delta.dtype == u.dtype
    assert D is None and z is None and delta_bias is None and not delta_softplus and return_last_state
    b, d, t = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for i in range(t):
        h = torch.exp(delta[:, :, i, None] * A) * h + (delta[:, :, i] * u[:, :, i])[:, :, None] * B[:, None, :, i]
        ys.append((h * C[:, None, :, i]).sum(-1))
    return torch.stack(ys, dim=-1), h


def _inputs(t=11, device="cpu", dtype=torch.float64):
    torch.manual_seed(t)
    b, d, n = 2, 6, 4
    x, B, C = torch.randn(b, t, d), torch.randn(b, t, n), torch.randn(b, t, n)
    dt, A = F.softplus(torch.randn(b, t, d)) / 2, -torch.rand(d, n) * 3 - 0.1
    return [z.to(device=device, dtype=dtype).requires_grad_(True) for z in (x, dt, A, B, C)]


@pytest.fixture
def fake_kernel(monkeypatch):
    """mamba-ssm 'installed' on this machine: the documented kernel, ready for CPU tensors."""
    monkeypatch.setattr(pulse_mamba, "kernel", lambda: _documented_kernel)
    monkeypatch.setattr(pulse_mamba, "ready", lambda x: True)
    monkeypatch.delenv("PULSE_MAMBA", raising=False)
    backend._failed.discard("selective_scan")
    backend.reset_paths()


def test_cpu_tensors_take_the_eager_path():
    backend.reset_paths()
    x, dt, A, B, C = _inputs()
    selective_scan(x, dt, A, B, C)
    assert backend.paths_taken()["selective_scan"] == "eager"
    selective_scan(x, dt, A, B, C, torch.zeros(2, 6, 4, dtype=x.dtype))
    assert backend.paths_taken()["selective_scan"] == "eager"


def test_the_kernel_gets_its_layout_and_matches_the_reference(fake_kernel):
    inputs = _inputs(dtype=torch.float32)  # the kernel takes A in float32
    fast = selective_scan(*inputs)
    assert backend.paths_taken()["selective_scan"] == "mamba-ssm"
    ref = selective_scan_reference(*inputs)
    assert_grads_close(list(fast), list(ref), inputs, "selective scan via mamba-ssm's layout")


def test_a_continued_state_and_the_switch_keep_the_eager_path(fake_kernel, monkeypatch):
    x, dt, A, B, C = _inputs()
    h0 = torch.randn(2, 6, 4, dtype=x.dtype)
    y, _ = selective_scan(x, dt, A, B, C, h0)
    torch.testing.assert_close(y, selective_scan_reference(x, dt, A, B, C, h0)[0])
    assert backend.paths_taken()["selective_scan"] == "eager"
    monkeypatch.setenv("PULSE_MAMBA", "0")
    selective_scan(x, dt, A, B, C)
    assert backend.paths_taken()["selective_scan"] == "eager"


def test_a_failing_kernel_falls_back_and_names_the_path(fake_kernel, monkeypatch):
    failing = lambda *a: (_ for _ in ()).throw(RuntimeError("no kernel image for sm_90"))  # noqa: E731
    monkeypatch.setattr(pulse_mamba, "probe", failing)
    x, dt, A, B, C = _inputs()
    with pytest.warns(UserWarning, match="selective_scan fell back to the eager path because mamba-ssm failed"):
        y, _ = selective_scan(x, dt, A, B, C)
    torch.testing.assert_close(y, selective_scan_reference(x, dt, A, B, C)[0])
    assert backend.paths_taken()["selective_scan"].startswith("eager (mamba-ssm failed: RuntimeError: no kernel image")


def test_the_ssm_mixer_uses_the_kernel_from_a_fresh_state_only(fake_kernel):
    torch.manual_seed(0)
    layer = SelectiveSSM(8, d_state=4).double()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    y, state = layer(x)
    assert backend.paths_taken()["selective_scan"] == "mamba-ssm"
    y2, _ = layer(x[:, :5])
    y3, _ = layer(x[:, 5:], layer(x[:, :5])[1])
    assert backend.paths_taken()["selective_scan"] == "eager"  # the continuation carries a state
    torch.testing.assert_close(torch.cat((y2, y3), dim=1), y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mamba-ssm's kernel needs a CUDA device; none here")
@pytest.mark.skipif(pulse_mamba.unavailable_reason() is not None,
                    reason=f"mamba-ssm not importable: {pulse_mamba.unavailable_reason()} (pip install 'pulse[mamba]')")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mamba_ssm_matches_the_chunked_reference(dtype):
    ref_in = _inputs(t=300, device="cuda", dtype=torch.float32)
    fast_in = [z.detach().to(dtype if i != 2 else torch.float32).requires_grad_(True) for i, z in enumerate(ref_in)]
    backend.reset_paths()
    fast = selective_scan(*fast_in)
    taken = backend.paths_taken()["selective_scan"]
    assert taken == "mamba-ssm", f"mamba-ssm imports on this CUDA machine, yet the scan took {taken!r}"
    ref = selective_scan(*ref_in, torch.zeros(2, 6, 4, device="cuda"))  # a state given: the eager form
    weights = [torch.randn_like(r) for r in ref]
    grads = [torch.autograd.grad(sum((a.float() * w).sum() for a, w in zip(o, weights)), z)
             for o, z in ((fast, fast_in), (ref, ref_in))]
    rtol, atol = contract.TOLERANCES[dtype]
    for a, r in zip(list(fast) + list(grads[0]), list(ref) + list(grads[1])):
        scale = r.abs().max().clamp_min(1)
        torch.testing.assert_close(a.float() / scale, r / scale, rtol=rtol, atol=atol)
