"""Forgetting attention (`forgetting_attention`, pulse/blocks/mixers/forgetting_attention.py): the SDPA form against
its per-token recurrence, against fla's own reference (the outside oracle), against PULSE's `attention` with f ≡ 1,
and the block's step, cache and document starts. The registry-wide block contract runs in test_mixer_properties.py.

The oracle is fla-core's `fla/ops/forgetting_attn/naive.py` `naive_forgetting_attn`, loaded by path
(tests/oracles.py). How its conventions map onto PULSE's `forgetting_attention(q, k, v, cum)`:
- layout: fla's q, k, v are (B, T, H, D) and g (B, T, H); PULSE's are (b, h, t, e) and (b, h, t): transpose(1, 2).
  fla allows fewer key/value heads (GQA); PULSE has one key/value head per query head, so H = HQ.
- gate: fla's g is the per-token log forget gate log f_t (≤ 0) and it adds gc_i − gc_j with gc = cumsum(g); PULSE's
  op takes that cumulative sum `cum` itself (any offset; the block keeps it relative to its latest token), and
  the reference takes log f. So g = log_f and cum = log_f.cumsum(−1).
- scale: both default to D^−1/2 on the logits; neither op has a window here (fla's window_size = None).
- precision: fla's naive computes in float32 (`.float()` on every input); for the float64 check the test makes
  `.float()` keep float64 tensors as they are while the oracle runs (`float64_oracle`; the arithmetic is fla's,
  untouched) and checks that the oracle's output is float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pulse
from oracles import fla_naive
from pulse.blocks.layers.attention import CausalSelfAttention
from pulse.blocks.mixers.forgetting_attention import ForgettingAttention
from pulse.contract import assert_close, check_documents, check_gradient, check_split, check_step, tensors
from pulse.errors import PulseError
from pulse.ops.documents import first_keys
from pulse.ops.forgetting_attention import forgetting_attention, forgetting_attention_reference

F64 = torch.float64
ORACLE_TOL = 1e-8


@pytest.fixture
def float64_oracle(monkeypatch):
    """fla's naive_forgetting_attn, with `.float()` leaving float64 tensors float64 while it runs."""
    cast = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float", lambda z, *a, **kw: z if z.dtype == F64 else cast(z, *a, **kw))
    return fla_naive("forgetting_attn").naive_forgetting_attn


def leaves(b, h, t, e, gen):
    """q, k, v (b, h, t, e) and log f (b, h, t) in (−∞, 0): leaves that need gradients."""
    q, k, v = (torch.randn(b, h, t, e, generator=gen, dtype=F64) for _ in range(3))
    log_f = F.logsigmoid(torch.randn(b, h, t, generator=gen, dtype=F64) * 2 + 1)
    return [z.requires_grad_(True) for z in (q, k, v, log_f)]


def values_and_grads(fn, inputs, gen):
    out = fn(*inputs)
    weights = torch.randn(out.shape, generator=gen, dtype=F64)
    return out, torch.autograd.grad((out * weights).sum(), inputs)


def starts(b, t, rows):
    mask = torch.zeros(b, t, dtype=torch.bool)
    for row, pos in enumerate(rows):
        mask[row, pos] = True
    return mask


@pytest.mark.parametrize("t, block", [(1, 512), (37, 16), (64, 512)])
def test_sdpa_form_equals_per_token_recurrence(t, block):
    inputs = leaves(2, 3, t, 8, torch.Generator().manual_seed(t))
    fast = values_and_grads(lambda q, k, v, g: forgetting_attention(q, k, v, g.cumsum(-1), block=block), inputs,
                            torch.Generator().manual_seed(1))
    slow = values_and_grads(forgetting_attention_reference, inputs, torch.Generator().manual_seed(1))
    for a, r in zip((fast[0], *fast[1]), (slow[0], *slow[1])):
        assert_close(a, r, "SDPA form vs per-token recurrence")


def test_sdpa_form_with_document_starts_equals_recurrence():
    gen = torch.Generator().manual_seed(3)
    b, t = 2, 29
    inputs = leaves(b, 2, t, 4, gen)
    mask = starts(b, t, [[0, 5, 17], [11, 12]])
    first = first_keys(mask, None, b, 0, t, "cpu")
    out = values_and_grads(lambda q, k, v, g: forgetting_attention(q, k, v, g.cumsum(-1), first=first, block=8),
                           inputs, torch.Generator().manual_seed(9))
    ref = values_and_grads(lambda q, k, v, g: forgetting_attention_reference(q, k, v, g, resets=mask),
                           inputs, torch.Generator().manual_seed(9))
    for a, r in zip((out[0], *out[1]), (ref[0], *ref[1])):
        assert_close(a, r, "document starts: SDPA form vs recurrence")


@pytest.mark.parametrize("t", [1, 23, 70])
def test_op_equals_fla_naive_forgetting_attn(float64_oracle, t):
    """The outside oracle, float64, values and gradients w.r.t. q, k, v and log f, to 1e-8."""
    gen = torch.Generator().manual_seed(100 + t)
    inputs = leaves(2, 3, t, 16, gen)
    ours = values_and_grads(lambda q, k, v, g: forgetting_attention(q, k, v, g.cumsum(-1), block=32), inputs,
                            torch.Generator().manual_seed(7))

    def fla(q, k, v, g):
        out = float64_oracle(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), g.transpose(1, 2))
        assert out.dtype == F64, "the oracle ran in float32; float64_oracle did not take"
        return out.transpose(1, 2)

    theirs = values_and_grads(fla, inputs, torch.Generator().manual_seed(7))
    for what, a, r in zip(("o", "dq", "dk", "dv", "dlog_f"), (ours[0], *ours[1]), (theirs[0], *theirs[1])):
        torch.testing.assert_close(a, r, rtol=ORACLE_TOL, atol=ORACLE_TOL, msg=lambda m, w=what: f"{w}: {m}")


def test_layer_equals_fla_naive_with_its_projections(float64_oracle):
    """The block is W_o · naive_forgetting_attn(W_q x, W_k x, W_v x, logsigmoid(W_f x + b_f)), per head."""
    torch.manual_seed(0)
    layer = ForgettingAttention(24, num_heads=3, dtype=F64)
    with torch.no_grad():
        layer.fgate.weight.normal_(std=0.5)
        layer.fgate.bias.uniform_(-1.0, 3.0)
    x = torch.randn(2, 19, 24, dtype=F64)
    y, _ = layer(x)
    q, k, v = layer.qkv(x).view(2, 19, 3, 3, 8).unbind(2)  # (b, t, h, e) each: fla's layout
    o = float64_oracle(q, k, v, F.logsigmoid(layer.fgate(x)))
    torch.testing.assert_close(y, layer.out(o.reshape(2, 19, 24)), rtol=ORACLE_TOL, atol=ORACLE_TOL)


@pytest.mark.parametrize("rotary_base", [None, 10000.0])
def test_no_forgetting_is_attention(rotary_base):
    """f ≡ 1 (log f = 0): the block is PULSE's `attention` with the same weights — also with document starts and a
    cache carried across calls."""
    torch.manual_seed(1)
    fox = ForgettingAttention(16, num_heads=2, rotary_base=rotary_base, dtype=F64)
    attn = CausalSelfAttention(16, num_heads=2, rotary_base=rotary_base, dtype=F64)
    with torch.no_grad():
        attn.load_state_dict({"qkv.weight": fox.qkv.weight, "out.weight": fox.out.weight})
        fox.fgate.weight.zero_()
        fox.fgate.bias.fill_(1e4)  # logsigmoid(1e4) = −e^{−1e4} = 0 in float64
    x = torch.randn(2, 21, 16, dtype=F64)
    mask = starts(2, 21, [[0, 6], [13]])
    for doc_starts in (None, mask):
        y1, s1 = fox(x[:, :9], doc_starts=None if doc_starts is None else doc_starts[:, :9])
        y2, _ = fox(x[:, 9:], s1, doc_starts=None if doc_starts is None else doc_starts[:, 9:])
        want, _ = attn(x, doc_starts=doc_starts)
        assert_close(torch.cat((y1, y2), dim=1), want, "f ≡ 1 vs attention")
    gen = torch.Generator().manual_seed(2)
    q, k, v, _ = leaves(1, 2, 11, 8, gen)
    assert_close(forgetting_attention(q, k, v, torch.zeros(1, 2, 11, dtype=F64)),
                 F.scaled_dot_product_attention(q, k, v, is_causal=True), "op with log f = 0 vs causal SDPA")


def test_step_equals_forward_and_the_cache_grows_as_documented():
    torch.manual_seed(2)
    layer = pulse.build_mixer("forgetting_attention", 16, num_heads=4, dtype=F64)
    x = torch.randn(3, 17, 16, dtype=F64)
    check_step(layer, x)
    _, state = layer(x)
    assert sum(s.numel() for s in tensors(state)) == 3 * layer.state_numel(17)
    # the carried log-decay is relative to the latest token: 0 there, ≤ 0 before
    assert state["g"][..., -1].abs().max() == 0 and (state["g"] <= 0).all()
    y, _ = layer(x)
    state = layer.init_state(3, dtype=F64)
    y_a, state = layer(x[:, :5], state)
    for i in range(5, 17):
        y_t, state = layer.step(x[:, i], state)
        assert_close(y_t, y[:, i], f"prefill then step at {i}")


def test_document_starts_reset_the_state():
    torch.manual_seed(3)
    layer = pulse.build_mixer("forgetting_attention", 16, num_heads=2, dtype=F64)
    check_documents(layer, torch.randn(2, 23, 16, dtype=F64), [[0, 7, 15], [4]], torch.randn(2, 5, 16, dtype=F64))
    # a start given to `step` forgets the cache for that row only
    x = torch.randn(2, 9, 16, dtype=F64)
    _, state = layer(x[:, :8])
    y_t, _ = layer.step(x[:, 8], state, doc_starts=torch.tensor([True, False]))
    alone, _ = layer(x[:1, 8:])
    assert_close(y_t[0], alone[0, 0], "step with a start vs the token alone")
    assert_close(y_t[1], layer(x[1:])[0][0, -1], "step without a start vs the row's forward")


@pytest.mark.parametrize("qk_norm, output_gate", [(True, False), (False, True), (True, True)])
def test_pro_options_keep_the_contract(float64_oracle, qk_norm, output_gate):
    """FoX's QK-norm and output gate: the block is still the oracle's attention between its own maps, steps like
    its forward, splits, resets at document starts, and every parameter learns."""
    torch.manual_seed(4)
    layer = ForgettingAttention(16, num_heads=2, qk_norm=qk_norm, output_gate=output_gate, rotary_base=500.0,
                                dtype=F64)
    with torch.no_grad():
        for p in (layer.q_scale, layer.k_scale):
            if p is not None:
                p.uniform_(0.5, 1.5)
    x = torch.randn(2, 13, 16, dtype=F64)
    for check in (check_step, check_gradient):
        check(layer, x)
    check_split(layer, x, 6)
    check_documents(layer, x, [[0, 5], [9]], torch.randn(2, 3, 16, dtype=F64))
    assert layer.param_count() == sum(p.numel() for p in layer.parameters())
    if not qk_norm:
        q, k, v = layer.qkv(x).view(2, 13, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k = layer.rotary(q), layer.rotary(k)
        o = float64_oracle(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), F.logsigmoid(layer.fgate(x)))
        want = layer.out(o.reshape(2, 13, 16) * torch.sigmoid(layer.ogate(x)))
        torch.testing.assert_close(layer(x)[0], want, rtol=ORACLE_TOL, atol=ORACLE_TOL)


def test_params_and_bad_sizes():
    layer = ForgettingAttention(24, num_heads=3, bias=True)
    assert layer.param_count() == sum(p.numel() for p in layer.parameters())
    pro = ForgettingAttention(24, num_heads=3, qk_norm=True, output_gate=True)
    assert pro.param_count() == sum(p.numel() for p in pro.parameters()) == 4 * 24**2 + 24 * 3 + 3 + 24**2 + 2 * 24
    assert pulse.build_mixer("forgetting_attention", 16, num_heads=2).param_count() == 4 * 16**2 + 16 * 2 + 2
    with pytest.raises(PulseError, match="must divide"):
        ForgettingAttention(10, num_heads=3)
    with pytest.raises(PulseError, match="even head dim"):
        ForgettingAttention(9, num_heads=3, rotary_base=10000.0)
    assert layer.flops_per_token(4096) > 2 * layer.flops_per_token(1024) - 8.0 * 24**2 - 2.0 * 24 * 3
