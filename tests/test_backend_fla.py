"""fla's linear-attention kernel against PULSE's own chunked form, where CUDA and fla are present."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_grads_close
from pulse import contract
from pulse.ops import backend
from pulse.ops import fla as pulse_fla
from pulse.ops.linear_attention import chunk_linear_attention, linear_attention


def fla_refusal(gated: bool, capability_major: int | None = None, triton_version: str | None = None) -> str | None:
    """The one refusal fla is known for: 0.6 refuses Triton < 3.7.1 on Hopper (sm_90) for its gated
    backward. The reason where it applies (device and Triton read from this machine unless given),
    else None."""
    if not gated:
        return None
    if capability_major is None:
        if not torch.cuda.is_available():
            return None
        capability_major = torch.cuda.get_device_capability()[0]
    if triton_version is None:
        try:
            import triton
        except ImportError:
            return None
        triton_version = triton.__version__
    version = tuple(int(part) for part in re.findall(r"\d+", triton_version)[:3])
    if capability_major == 9 and version < (3, 7, 1):
        return f"fla refuses Triton {triton_version} (< 3.7.1) on Hopper for its gated backward"
    return None


def expect_fla_or_its_documented_refusal(op: str, gated: bool) -> None:
    """fla must have run `op`; only where its one known refusal applies must the call instead have fallen
    back to eager and said so. Either way the caller then compares the results with the reference."""
    taken = backend.paths_taken()[op]
    refusal = fla_refusal(gated)
    if refusal is None:
        assert taken == "fla", f"{op} took {taken!r}, not fla"
    else:
        assert taken.startswith("eager (fla failed: "), f"{refusal}: {op} should fall back and say so; took {taken!r}"


def test_the_documented_fla_refusal_is_recognised_exactly():
    assert fla_refusal(True, 9, "3.6.0") and fla_refusal(True, 9, "3.7.0+git1a2b")
    assert fla_refusal(True, 9, "3.7.1") is None and fla_refusal(True, 9, "3.10.0") is None
    assert fla_refusal(True, 8, "3.6.0") is None and fla_refusal(False, 9, "3.6.0") is None


def test_cpu_tensors_take_the_eager_path():
    backend.reset_paths()
    q = torch.rand(1, 2, 5, 4)
    out = linear_attention(q, q, q, normalize=True, chunk_size=2)
    ref = chunk_linear_attention(q, q, q, normalize=True, chunk_size=2)
    torch.testing.assert_close(out.out, ref.out)
    assert backend.paths_taken()["linear_attention"] == "eager"


def test_the_eager_fallback_takes_bf16_inputs_with_float32_decays():
    # what a gated call runs where fla refuses it: bf16 q, k, v with float32 log-decays, which the
    # chunked form sums in float32 and applies in bf16 (it used to stop on the mixed dtypes)
    torch.manual_seed(0)
    b, h, t, k = 1, 2, 100, 16
    q, key, val = torch.rand(b, h, t, k) / k, torch.rand(b, h, t, k), torch.randn(b, h, t, k)
    log_decay = F.logsigmoid(torch.randn(b, h, t) + 4)
    ref = chunk_linear_attention(q, key, val, log_decay, chunk_size=32)
    half = chunk_linear_attention(q.bfloat16(), key.bfloat16(), val.bfloat16(), log_decay, chunk_size=32)
    assert half.out.dtype == half.state.dtype == torch.bfloat16
    rtol, atol = contract.TOLERANCES[torch.bfloat16]
    for a, r in ((half.out, ref.out), (half.state, ref.state)):
        scale = r.abs().max()
        torch.testing.assert_close(a.float() / scale, r / scale, rtol=rtol, atol=atol)


def test_a_failing_fla_call_falls_back_and_names_the_path(monkeypatch):
    monkeypatch.setattr(pulse_fla, "fla_ready", lambda x: True)
    monkeypatch.setattr(pulse_fla, "probe", lambda *a: (_ for _ in ()).throw(RuntimeError("Triton < 3.7.1 on Hopper")))
    backend._failed.discard("linear_attention")
    q = torch.rand(1, 2, 5, 4)
    with pytest.warns(UserWarning, match="linear_attention fell back to the eager path because fla failed"):
        out = linear_attention(q, q, q, normalize=True, chunk_size=2)
    torch.testing.assert_close(out.out, chunk_linear_attention(q, q, q, normalize=True, chunk_size=2).out)
    assert backend.paths_taken()["linear_attention"].startswith("eager (fla failed: RuntimeError: Triton < 3.7.1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's kernels need a CUDA device; none here")
@pytest.mark.skipif(pulse_fla.unavailable_reason() is not None,
                    reason=f"fla not importable: {pulse_fla.unavailable_reason()} (pip install 'pulse[gpu]')")
@pytest.mark.parametrize("t", [63, 500])
@pytest.mark.parametrize("decay,normalize", [(False, True), (True, False), (True, True)])
def test_fla_matches_the_chunked_reference(t, decay, normalize):
    torch.manual_seed(t)
    b, h, k, v = 2, 3, 32, 32
    dev = "cuda"
    q, key = torch.rand(b, h, t, k, device=dev) / k, torch.rand(b, h, t, k, device=dev)
    val, s0 = torch.randn(b, h, t, v, device=dev), torch.randn(b, h, k, v, device=dev)
    z0 = torch.rand(b, h, k, device=dev)
    log_decay = F.logsigmoid(torch.randn(b, h, t, device=dev) + 4) if decay else None
    ref_in = [q, key, val, s0] + ([z0] if normalize else [])
    fla_in = [x.bfloat16() for x in ref_in]  # fla's kernels run in bf16, compared at the bf16 tolerance
    for x in ref_in + fla_in:
        x.requires_grad_(True)
    backend.reset_paths()
    fast = linear_attention(*_args(fla_in, log_decay, normalize), normalize=normalize)
    expect_fla_or_its_documented_refusal("linear_attention", gated=decay)
    ref = chunk_linear_attention(*_args(ref_in, log_decay, normalize), normalize=normalize)
    outs = [[a for a in res if a is not None] for res in (fast, ref)]
    weights = [torch.randn_like(a) for a in outs[1]]
    grads = [torch.autograd.grad(sum((a.float() * w).sum() for a, w in zip(o, weights)), x)
             for o, x in zip(outs, (fla_in, ref_in))]
    rtol, atol = contract.TOLERANCES[torch.bfloat16]
    for a, r in zip(outs[0] + list(grads[0]), outs[1] + list(grads[1])):
        scale = r.abs().max().clamp_min(1)  # relative to each tensor's size: bf16 keeps 8 bits of mantissa
        torch.testing.assert_close(a.float() / scale, r / scale, rtol=rtol, atol=atol)


def _args(x, log_decay, normalize):
    q, key, val, s0 = x[:4]
    return q, key, val, log_decay, s0, x[4] if normalize else None


# the (gated) delta rule: deltanet / gated_deltanet dispatch the same way


def _delta_inputs(t, gated, device="cpu", dk=8):
    torch.manual_seed(t)
    b, h = 2, 3
    q, k = torch.randn(b, h, t, dk, device=device), F.normalize(torch.randn(b, h, t, dk, device=device), dim=-1)
    v, beta = torch.randn(b, h, t, dk, device=device), torch.rand(b, h, t, device=device)
    log_decay = F.logsigmoid(torch.randn(b, h, t, device=device) + 3) if gated else None
    return q, k, v, beta, log_decay, torch.randn(b, h, dk, dk, device=device)


def check_eager_then_fallback(monkeypatch, op: str, probe: str, call, reference) -> None:
    """On the CPU `call()` takes the eager path and equals `reference`; with fla pretending to be ready and its
    `probe` failing, it warns, falls back, still equals `reference`, and records why."""
    backend.reset_paths()
    torch.testing.assert_close(call(), reference)
    assert backend.paths_taken()[op] == "eager"
    monkeypatch.setattr(pulse_fla, "fla_ready", lambda x: True)
    monkeypatch.setattr(pulse_fla, probe, lambda *a: (_ for _ in ()).throw(RuntimeError("Triton < 3.7.1")))
    backend._failed.discard(op)
    with pytest.warns(UserWarning, match=f"{op} fell back to the eager path because fla failed"):
        torch.testing.assert_close(call(), reference)
    assert backend.paths_taken()[op].startswith("eager (fla failed: RuntimeError")


def test_delta_rule_on_cpu_takes_the_eager_path_and_falls_back_when_fla_fails(monkeypatch):
    from pulse.ops.delta_rule import chunk_delta_rule, delta_rule

    args = _delta_inputs(9, gated=True)
    check_eager_then_fallback(monkeypatch, "delta_rule", "probe_delta", lambda: delta_rule(*args, chunk_size=4)[0],
                              chunk_delta_rule(*args, chunk_size=4)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's kernels need a CUDA device; none here")
@pytest.mark.skipif(pulse_fla.unavailable_reason() is not None,
                    reason=f"fla not importable: {pulse_fla.unavailable_reason()} (pip install 'pulse[gpu]')")
@pytest.mark.parametrize("gated", [False, True])
def test_fla_delta_rule_matches_the_chunked_reference(gated):
    from pulse.ops.delta_rule import chunk_delta_rule, delta_rule

    q, k, v, beta, log_decay, s0 = _delta_inputs(200, gated, device="cuda", dk=32)
    backend.reset_paths()
    out, state = delta_rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), beta.bfloat16(), log_decay, s0)
    expect_fla_or_its_documented_refusal("delta_rule", gated=gated)
    ref_out, ref_state = chunk_delta_rule(q, k, v, beta, log_decay, s0)
    rtol, atol = contract.TOLERANCES[torch.bfloat16]
    for a, r in ((out, ref_out), (state, ref_state)):
        scale = r.abs().max().clamp_min(1)
        torch.testing.assert_close(a.float() / scale, r / scale, rtol=rtol, atol=atol)


# the SSD of mamba2 is simple GLA: it dispatches to the same kernel


def _ssd_inputs(t, device="cpu", dtype=torch.float32):
    torch.manual_seed(t)
    b, h, p, s = 2, 3, 8, 5
    x, B, C = torch.randn(b, h, t, p), torch.randn(b, t, s), torch.randn(b, t, s)
    dt, A = F.softplus(torch.randn(b, h, t)), -torch.rand(h) * 4 - 0.5
    s0 = torch.randn(b, h, s, p)
    return [z.to(device=device, dtype=dtype) for z in (x, dt, A, B, C, s0)]


def test_ssd_as_gla_equals_the_recurrence_on_cpu():
    """The mapping fla gets (q = C, k = B, v = Δx, g = ΔA), run here through PULSE's own GLA core."""
    from pulse.ops.linear_attention import _chunk_core
    from pulse.ops.ssd import as_gla, recurrent_ssd

    inputs = _ssd_inputs(23, dtype=torch.float64)
    for z in inputs:
        z.requires_grad_(True)
    x, dt, A, B, C, s0 = inputs
    fast = as_gla(x, dt, A, B, C, s0, lambda q, k, v, g, s: _chunk_core(q, k, v, g, s, 8))
    assert_grads_close(list(fast), list(recurrent_ssd(x, dt, A, B, C, s0)), inputs, "ssd as simple GLA")


def test_ssd_on_cpu_takes_the_eager_path_and_falls_back_when_fla_fails(monkeypatch):
    from pulse.ops.ssd import chunk_ssd, ssd

    args = _ssd_inputs(9)
    check_eager_then_fallback(monkeypatch, "ssd", "probe", lambda: ssd(*args, chunk_size=4)[0],
                              chunk_ssd(*args, chunk_size=4)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's kernels need a CUDA device; none here")
@pytest.mark.skipif(pulse_fla.unavailable_reason() is not None,
                    reason=f"fla not importable: {pulse_fla.unavailable_reason()} (pip install 'pulse[gpu]')")
def test_fla_ssd_matches_the_chunked_reference():
    from pulse.ops.ssd import chunk_ssd, ssd

    ref_in = _ssd_inputs(300, device="cuda")
    fla_in = [z.bfloat16() if i in (0, 3, 4) else z for i, z in enumerate(ref_in)]  # x, B, C in bf16
    for z in ref_in + fla_in:
        z.requires_grad_(True)
    backend.reset_paths()
    fast = ssd(*fla_in)
    expect_fla_or_its_documented_refusal("ssd", gated=True)
    ref = chunk_ssd(*ref_in)
    weights = [torch.randn_like(r) for r in ref]
    grads = [torch.autograd.grad(sum((a.float() * w).sum() for a, w in zip(o, weights)), z)
             for o, z in ((fast, fla_in), (ref, ref_in))]
    rtol, atol = contract.TOLERANCES[torch.bfloat16]
    for a, r in zip(list(fast) + list(grads[0]), list(ref) + list(grads[1])):
        scale = r.abs().max().clamp_min(1)
        torch.testing.assert_close(a.float() / scale, r / scale, rtol=rtol, atol=atol)


# the generalized delta rule: kda through fla's chunk_kda, everything else through its chunk_rwkv7 (DPLR)


def _fake_fla(monkeypatch):
    """fla's two kernels as its documentation states them, written out per token in fla's layout (b, t, h, ·),
    so that PULSE's argument order and notation can be checked on a CPU: chunk_rwkv7 reads along `a` and
    writes along `b`, S ← Diag(e^w) S + b (aᵀ S) + k vᵀ; chunk_kda S ← (I − β k kᵀ) Diag(e^g) S + β k vᵀ."""
    import sys
    import types

    def loop(q, k, v, initial_state, update):
        s, outs = initial_state.clone(), []
        for i in range(q.shape[1]):
            s = update(s, i)
            outs.append(torch.einsum("bhk,bhkv->bhv", q[:, i], s))
        return torch.stack(outs, dim=1), s

    def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False):
        read = lambda s, i: torch.einsum("bhk,bhkv->bhv", a[:, i], s)  # noqa: E731
        return loop(scale * r, k, v, initial_state, lambda s, i: s * w[:, i].exp()[..., None]
                    + b[:, i, ..., None] * read(s, i)[..., None, :] + k[:, i, ..., None] * v[:, i, :, None, :])

    def chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
        def update(s, i):
            s = s * g[:, i].exp()[..., None]
            kk, bt = k[:, i], beta[:, i, :, None]
            s = s - bt[..., None] * kk[..., None] * torch.einsum("bhk,bhkv->bhv", kk, s)[..., None, :]
            return s + (bt * kk)[..., None] * v[:, i, :, None, :]
        return loop(scale * q, k, v, initial_state, update)

    modules = {"fla": types.ModuleType("fla"), "fla.ops": types.ModuleType("fla.ops"),
               "fla.ops.rwkv7": types.ModuleType("fla.ops.rwkv7"), "fla.ops.kda": types.ModuleType("fla.ops.kda")}
    modules["fla.ops.rwkv7"].chunk_rwkv7 = chunk_rwkv7
    modules["fla.ops.kda"].chunk_kda = chunk_kda
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(pulse_fla, "fla_ready", lambda x: True)


def _generalized_inputs(t=11, b=2, h=2, k=4, v=3):
    torch.manual_seed(t)
    q, keys = torch.randn(b, h, t, k), F.normalize(torch.randn(b, h, t, k), dim=-1)
    beta, log_w = torch.rand(b, h, t), -torch.rand(b, h, t, k)
    return q, keys, torch.randn(b, h, t, v), beta, log_w, torch.randn(b, h, k, v)


def test_generalized_delta_and_kda_map_their_arguments_onto_fla_as_fla_documents_them(monkeypatch):
    from pulse.ops.generalized_delta import chunk_generalized_delta, generalized_delta, kda_rule

    q, k, v, beta, log_w, s0 = _generalized_inputs()
    a, b = -beta[..., None] * k, k * log_w.exp()  # KDA's write-side and read-side vectors
    ref = chunk_generalized_delta(q, beta[..., None] * k, v, a, b, log_w, s0, chunk_size=4)
    _fake_fla(monkeypatch)
    backend.reset_paths()
    for got in (generalized_delta(q, beta[..., None] * k, v, a, b, log_w, s0, chunk_size=4),
                kda_rule(q, k, v, beta, log_w, s0, chunk_size=4)):
        for x, y in zip(got, ref):
            torch.testing.assert_close(x, y)
    assert backend.paths_taken()["generalized_delta"] == "fla" and backend.paths_taken()["kda"] == "fla"
    starts = torch.zeros(2, 11, dtype=torch.bool)
    starts[0, 5] = True
    kda_rule(q, k, v, beta, log_w, s0, starts, chunk_size=4)  # fla's kernels take no document starts
    assert backend.paths_taken()["kda"] == "eager (document starts)"


def test_generalized_delta_on_cpu_takes_the_eager_path_and_falls_back_when_fla_fails(monkeypatch):
    from pulse.ops.generalized_delta import chunk_generalized_delta, kda_rule

    q, k, v, beta, log_w, s0 = _generalized_inputs()
    ref = chunk_generalized_delta(q, beta[..., None] * k, v, -beta[..., None] * k, k * log_w.exp(), log_w, s0,
                                  chunk_size=4)
    check_eager_then_fallback(monkeypatch, "kda", "probe_generalized",
                              lambda: kda_rule(q, k, v, beta, log_w, s0, chunk_size=4)[0], ref[0])


def check_generalized_parity(op: str, device: str, dtype: torch.dtype, t: int) -> None:
    """`op` ("kda" or "generalized_delta") through fla in `dtype` against the float32 chunked reference: outputs,
    final state, and the gradients of a random projection of both with respect to every input."""
    from pulse.ops.generalized_delta import chunk_generalized_delta, generalized_delta, kda_rule

    leaves = [x.to(device) for x in _generalized_inputs(t=t, h=3, k=32, v=32)]
    low = [x.to(dtype) for x in leaves[:4]] + leaves[4:]  # log decays and the state stay float32
    for x in leaves + low:
        x.requires_grad_(True)

    def call(q, k, v, beta, log_w, s0, fn):
        a, b = -beta[..., None] * k, k * log_w.exp()
        if fn is kda_rule:
            return kda_rule(q, k, v, beta, log_w, s0)
        return fn(q, beta[..., None] * k, v, a, b, log_w, s0)

    backend.reset_paths()
    got = call(*low, kda_rule if op == "kda" else generalized_delta)
    expect_fla_or_its_documented_refusal(op, gated=True)
    ref = call(*leaves, chunk_generalized_delta)
    weights = [torch.randn_like(r) for r in ref]
    grads = [torch.autograd.grad(sum((o.float() * w).sum() for o, w in zip(out, weights)), xs)
             for out, xs in ((got, low), (ref, leaves))]
    rtol, atol = contract.TOLERANCES[dtype]
    for x, r in zip([*got, *grads[0]], [*ref, *grads[1]]):
        scale = r.abs().max().clamp_min(1)  # relative to each tensor's size
        torch.testing.assert_close(x.float() / scale, r.float() / scale, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op", ["kda", "generalized_delta"])
def test_the_fla_parity_check_runs_on_the_cpu_through_the_stand_in(monkeypatch, op):
    """The GPU test's body, on the CPU through the stand-in fla in float32: so that what runs behind its skip is
    exercised on every machine. `fla` must be the path taken, and values and gradients must agree."""
    _fake_fla(monkeypatch)
    check_generalized_parity(op, "cpu", torch.float32, t=24)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's kernels need a CUDA device; none here")
@pytest.mark.skipif(pulse_fla.unavailable_reason() is not None,
                    reason=f"fla not importable: {pulse_fla.unavailable_reason()} (pip install 'pulse[gpu]')")
@pytest.mark.parametrize("op", ["kda", "generalized_delta"])
def test_fla_generalized_delta_matches_the_chunked_reference(op):
    check_generalized_parity(op, "cuda", torch.bfloat16, t=200)
