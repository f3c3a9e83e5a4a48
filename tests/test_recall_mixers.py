"""The recall mixers' fast paths against their per-token references: values and gradients, float64.

The block contract (shape, causal, split, step, batch, gradient, param formula) is covered for
`gated_deltanet`, `deltanet` and `mamba2` by tests/test_mixer_properties.py; this file holds the
op-level comparisons and the specs' cross-field checks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pulse
from pulse.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from pulse.ops.ssd import chunk_ssd, recurrent_ssd

F64 = torch.float64
CASES = [(c, t) for c in (1, 8, 16, 64) for t in (1, 13, 63, 130)]


def _grads(fn, inputs):
    out, state = fn(*inputs)
    gen = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=F64)).sum()
    loss = loss + (state * torch.randn(state.shape, generator=gen, dtype=F64)).sum()
    grads = torch.autograd.grad(loss, [x for x in inputs if x is not None])
    return out.detach(), state.detach(), grads


def _compare(chunk_fn, ref_fn, inputs):
    out_c, state_c, grads_c = _grads(chunk_fn, inputs)
    out_r, state_r, grads_r = _grads(ref_fn, inputs)
    torch.testing.assert_close(out_c, out_r, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(state_c, state_r, rtol=1e-9, atol=1e-10)
    for i, (gc, gr) in enumerate(zip(grads_c, grads_r)):
        torch.testing.assert_close(gc, gr, rtol=1e-8, atol=1e-10, msg=lambda m, i=i: f"gradient of input {i}: {m}")


def _delta_inputs(t, gated, seed=0, b=2, h=3, dk=8, dv=6):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, dk, generator=gen, dtype=F64)
    k = F.normalize(torch.randn(b, h, t, dk, generator=gen, dtype=F64), dim=-1)
    v = torch.randn(b, h, t, dv, generator=gen, dtype=F64)
    beta = torch.rand(b, h, t, generator=gen, dtype=F64)
    log_decay = -torch.rand(b, h, t, generator=gen, dtype=F64) * 0.5 if gated else None
    state = torch.randn(b, h, dk, dv, generator=gen, dtype=F64)
    xs = [q, k, v, beta, log_decay, state]
    return [x.requires_grad_(True) if x is not None else None for x in xs]


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated"])
@pytest.mark.parametrize("chunk,length", CASES)
def test_chunk_delta_rule_matches_reference(chunk, length, gated):
    inputs = _delta_inputs(length, gated, seed=chunk * 1000 + length)
    _compare(lambda *a: chunk_delta_rule(*a, chunk_size=chunk), recurrent_delta_rule, inputs)


def test_delta_rule_stores_and_overwrites_a_key():
    """β = 1, α = 1: writing v under a unit key and reading it back returns v; a second write replaces it."""
    k = F.normalize(torch.randn(1, 1, 1, 4, dtype=F64), dim=-1).expand(1, 1, 3, 4)
    v = torch.randn(1, 1, 3, 5, dtype=F64)
    out, _ = chunk_delta_rule(k, k, v, torch.ones(1, 1, 3, dtype=F64), chunk_size=2)
    torch.testing.assert_close(out, v)


def test_delta_rule_is_stable_at_long_lengths():
    inputs = [x.detach() if x is not None else None for x in _delta_inputs(2000, True, b=1, h=2)]
    inputs[4] = inputs[4] * 40  # cumulative log-decay far below −10 000
    out_c, s_c = chunk_delta_rule(*inputs, chunk_size=64)
    out_r, s_r = recurrent_delta_rule(*inputs)
    assert torch.isfinite(out_c).all() and torch.isfinite(s_c).all()
    torch.testing.assert_close(out_c, out_r, rtol=1e-9, atol=1e-10)


def _ssd_inputs(t, seed=0, b=2, h=3, p=4, s=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, t, p, generator=gen, dtype=F64)
    dt = torch.rand(b, h, t, generator=gen, dtype=F64) * 0.5
    A = -torch.rand(h, generator=gen, dtype=F64) * 4 - 0.1
    B = torch.randn(b, t, s, generator=gen, dtype=F64)
    C = torch.randn(b, t, s, generator=gen, dtype=F64)
    state = torch.randn(b, h, s, p, generator=gen, dtype=F64)
    return [z.requires_grad_(True) for z in (x, dt, A, B, C, state)]


@pytest.mark.parametrize("chunk,length", CASES)
def test_chunk_ssd_matches_reference(chunk, length):
    inputs = _ssd_inputs(length, seed=chunk * 1000 + length)
    _compare(lambda *a: chunk_ssd(*a, chunk_size=chunk), recurrent_ssd, inputs)


def test_ssd_is_stable_at_long_lengths():
    x, dt, A, B, C, state = (z.detach() for z in _ssd_inputs(2000, b=1))
    dt = dt * 100  # Δ·A down to about −200 per token
    out_c, s_c = chunk_ssd(x, dt, A, B, C, state, chunk_size=64)
    out_r, s_r = recurrent_ssd(x, dt, A, B, C, state)
    assert torch.isfinite(out_c).all()
    torch.testing.assert_close(out_c, out_r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["gated_deltanet", "deltanet", "mamba2"])
def test_low_precision_runs_in_float32_inside(kind):
    torch.manual_seed(0)
    m = pulse.build_mixer(kind, 32)
    x = torch.randn(2, 70, 32)
    y, _ = m(x)
    y16, _ = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y, rtol=0.1, atol=0.1)


def test_deltanet_is_gated_deltanet_without_decay():
    gated = pulse.build_mixer("gated_deltanet", 32, device="meta")
    plain = pulse.build_mixer("deltanet", 32, device="meta")
    names = {n for n, _ in gated.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert names == {"A_log", "dt_bias"}
    assert gated.param_count() - plain.param_count() == 32 * 4 + 2 * 4


def test_spec_cross_field_checks():
    with pytest.raises(pulse.PulseError, match="not a whole value width"):
        pulse.build_mixer("gated_deltanet", 32, head_dim=3, expand_v=0.5)
    with pytest.raises(pulse.PulseError, match=r"num_heads \(3\) must divide expand · dim"):
        pulse.build_mixer("mamba2", 32, num_heads=3)
    with pytest.raises(pulse.PulseError, match="dt_min"):
        pulse.build_mixer("mamba2", 32, dt_min=0.5, dt_max=0.1)
    with pytest.raises(pulse.PulseError, match="did you mean `head_dim`"):
        pulse.build_mixer("deltanet", 32, head_dims=8)


def test_decay_rates_are_never_weight_decayed():
    from pulse.specs.run import TrainSpec
    from pulse.train.optim import make_optimizer

    recipe = pulse.recipe_from_dict({"model": {"dim": 16, "depth": 2, "layout": ["g", "m"], "mixers": {
        "g": {"kind": "gated_deltanet"}, "m": {"kind": "mamba2"}}}})
    model = pulse.build_model(recipe)
    opt = make_optimizer(model, TrainSpec(weight_decay=0.1, no_decay=[]))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    rates = [getattr(layer.mixer, name) for layer in model.layers for name in ("A_log", "dt_bias")]
    assert rates and all(id(p) not in decayed for p in rates)


@pytest.mark.parametrize("kind", ["gated_deltanet", "deltanet", "mamba2"])
def test_bad_sizes_given_to_the_constructor_are_pulse_errors(kind):
    module = pulse.registry.get(kind).module
    for args in ({"conv_size": 1}, {"chunk_size": 0}):
        with pytest.raises(pulse.PulseError, match=next(iter(args))):
            module(16, **args, device="meta")
