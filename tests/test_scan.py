"""The carry between chunks: the log-depth form equals the loop, and keeps the op count logarithmic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import assert_grads_close
from pulse.ops import scan
from pulse.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from pulse.ops.linear_attention import chunk_linear_attention, recurrent_linear_attention
from pulse.ops.selective_scan import selective_scan, selective_scan_reference
from pulse.ops.ssd import chunk_ssd, recurrent_ssd

F64 = torch.float64


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def log_depth(monkeypatch):
    """Every carry takes the log-depth form, as on a GPU, so the CPU tests cover it."""
    monkeypatch.setattr(scan, "resolve", lambda method, device: "log" if method == "auto" else method)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64])
@pytest.mark.parametrize("decay", [True, False])
def test_log_depth_carry_equals_the_loop(n, decay):
    torch.manual_seed(n)
    initial = torch.randn(2, 3, 4, 5, dtype=F64)
    local = torch.randn(2, 3, n, 4, 5, dtype=F64)
    a = torch.rand(2, 3, n, 1, 1, dtype=F64) if decay else None
    inputs = [z.requires_grad_(True) for z in (initial, local, a) if z is not None]
    loop = scan.carry(initial, local, a, dim=2, method="loop")
    log = scan.carry(initial, local, a, dim=2, method="log")
    assert loop[0].shape == local.shape and loop[1].shape == initial.shape
    assert_grads_close(list(log), list(loop), inputs, f"carry n={n} decay={decay}")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64])
@pytest.mark.parametrize("method", ["loop", "log"])
def test_affine_carry_equals_step_by_step_matrix_products(n, method):
    torch.manual_seed(n)
    initial = torch.randn(2, 3, 4, 5, dtype=F64)
    transition = torch.randn(2, 3, n, 4, 4, dtype=F64) / 2
    local = torch.randn(2, 3, n, 4, 5, dtype=F64)
    inputs = [z.requires_grad_(True) for z in (initial, transition, local)]
    x, expected = initial, []
    for i in range(n):
        expected.append(x)
        x = transition[:, :, i] @ x + local[:, :, i]
    got = scan.affine_carry(initial, transition, local, dim=2, method=method)
    assert got[0].shape == local.shape and got[1].shape == initial.shape
    assert_grads_close(list(got), [torch.stack(expected, dim=2), x], inputs, f"affine carry n={n} {method}")


def test_affine_carry_op_count_grows_with_log_n_not_n():
    def ops(n: int, method: str) -> int:
        initial, m, local = torch.randn(1, 4, 2), torch.randn(1, n, 4, 4), torch.randn(1, n, 4, 2)
        with _CountOps() as counter:
            scan.affine_carry(initial, m, local, dim=1, method=method)
        return counter.count

    # five more doublings, each two batched products (with their views), a sum and two cats
    assert ops(512, "log") <= ops(16, "log") + 24 * 5
    assert ops(512, "log") * 2 < 512 <= ops(512, "loop")


def test_auto_loops_on_the_cpu_and_takes_log_depth_elsewhere():
    assert scan.resolve("auto", torch.device("cpu")) == "loop"
    assert scan.resolve("auto", torch.device("cuda")) == "log"
    assert scan.resolve("log", torch.device("cpu")) == "log"


def test_log_depth_op_count_grows_with_log_n_not_n():
    # the point of the log form: on a GPU every op is a kernel launch
    def ops(n: int, method: str) -> int:
        initial, local, a = torch.randn(1, 4), torch.randn(1, n, 4), torch.rand(1, n, 4)
        with _CountOps() as counter:
            scan.carry(initial, local, a, dim=1, method=method)
        return counter.count

    # five more doublings, each a dozen ops (slices, a product, a sum, a cat, for x and for a)
    assert ops(512, "log") <= ops(16, "log") + 16 * 5
    assert ops(512, "log") * 4 < 512 <= ops(512, "loop")


def test_log_depth_never_overflows_with_strong_decays():
    n = 4096
    a = torch.full((n, 3), 1e-30)  # products underflow to 0, never overflow
    local = torch.randn(n, 3)
    starts, last = scan.carry(torch.ones(3), local, a, dim=0, method="log")
    assert torch.isfinite(starts).all()
    torch.testing.assert_close(last, local[-1] + 1e-30 * local[-2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("decay", [False, True])
def test_linear_attention_in_log_depth(log_depth, decay):
    torch.manual_seed(0)
    b, h, t, k, v = 2, 2, 37, 4, 3
    q, key = torch.rand(b, h, t, k, dtype=F64), torch.rand(b, h, t, k, dtype=F64)
    val, s0 = torch.randn(b, h, t, v, dtype=F64), torch.randn(b, h, k, v, dtype=F64)
    log_decay = F.logsigmoid(torch.randn(b, h, t, dtype=F64) * 2) if decay else None
    inputs = [z.requires_grad_(True) for z in (q, key, val, s0)]
    fast = chunk_linear_attention(q, key, val, log_decay, s0, normalize=True, chunk_size=4)
    slow = recurrent_linear_attention(q, key, val, log_decay, s0, normalize=True)
    assert_grads_close(list(fast), list(slow), inputs, f"linear attention, log-depth carry, decay={decay}")


def test_ssd_in_log_depth(log_depth):
    torch.manual_seed(0)
    b, t, h, p, n = 2, 29, 2, 3, 4
    x, B, C = torch.randn(b, h, t, p, dtype=F64), torch.randn(b, t, n, dtype=F64), torch.randn(b, t, n, dtype=F64)
    dt, A = F.softplus(torch.randn(b, h, t, dtype=F64)), -torch.rand(h, dtype=F64) * 3
    s0 = torch.randn(b, h, n, p, dtype=F64)
    inputs = [z.requires_grad_(True) for z in (x, B, C, dt, s0)]
    fast = chunk_ssd(x, dt, A, B, C, s0, chunk_size=4)
    slow = recurrent_ssd(x, dt, A, B, C, s0)
    assert_grads_close(list(fast), list(slow), inputs, "ssd, log-depth carry")


@pytest.mark.parametrize("group_elements", [None, 300])
def test_selective_scan_in_log_depth(log_depth, group_elements):
    torch.manual_seed(0)
    b, t, d, n = 2, 45, 3, 4
    x, B, C = torch.randn(b, t, d, dtype=F64), torch.randn(b, t, n, dtype=F64), torch.randn(b, t, n, dtype=F64)
    dt = F.softplus(torch.randn(b, t, d, dtype=F64))
    A, h0 = -torch.rand(d, n, dtype=F64) * 4, torch.randn(b, d, n, dtype=F64)
    inputs = [z.requires_grad_(True) for z in (x, dt, A, B, C, h0)]
    fast = selective_scan(x, dt, A, B, C, h0, chunk_size=4, group_elements=group_elements)
    slow = selective_scan_reference(x, dt, A, B, C, h0)
    assert_grads_close(list(fast), list(slow), inputs, f"selective scan, log-depth carry, groups of {group_elements}")


@pytest.mark.parametrize("gated", [False, True])
def test_delta_rule_in_log_depth(log_depth, gated):
    torch.manual_seed(0)
    b, h, t, k, v = 2, 2, 37, 4, 3
    q, key = torch.randn(b, h, t, k, dtype=F64), F.normalize(torch.randn(b, h, t, k, dtype=F64), dim=-1)
    val, s0 = torch.randn(b, h, t, v, dtype=F64), torch.randn(b, h, k, v, dtype=F64)
    beta = torch.rand(b, h, t, dtype=F64)
    log_decay = F.logsigmoid(torch.randn(b, h, t, dtype=F64) * 2) if gated else None
    inputs = [z.requires_grad_(True) for z in (q, key, val, beta, s0)]
    fast = chunk_delta_rule(q, key, val, beta, log_decay, s0, chunk_size=4)
    slow = recurrent_delta_rule(q, key, val, beta, log_decay, s0)
    assert_grads_close(list(fast), list(slow), inputs, f"delta rule, log-depth carry, gated={gated}")
