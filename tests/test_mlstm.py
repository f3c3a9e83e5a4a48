"""The mLSTM (xLSTM's matrix-memory LSTM): the chunkwise op against its per-token reference, both against
Transformers' reference PyTorch mLSTM, the block against Transformers' `xLSTMLayer`, decoding and documents.

The outside oracle is transformers.models.xlstm.modeling_xlstm (the plain-PyTorch path it uses when the
`xlstm` package is absent, as here): `mlstm_recurrent_sequence_native` (its per-token kernel),
`mlstm_chunkwise_native_autograd` (its chunkwise kernel) and `xLSTMLayer`. How the conventions map:

- layouts are the same: q, k (b, h, t, k), v (b, h, t, v), gates (b, h, t); their C (b, h, k, v) and n (b, h, k)
  are ours; their max state m is (b, h, 1), ours (b, h);
- gates: they take the forget gate's pre-activation f̃' and apply log σ inside; our op takes log f = log σ(f̃')
  (so an exponential forget gate is log f = f̃'); the input gate is the pre-activation in both (i = e^{ĩ});
- scale: both scale q by 1/√k inside the kernel; ε = 1e-6 is added to max(|nᵀq|, e^{−m}) in both;
- the layer (weight_mode "single", use_bias false, xLSTM-7B's): our `qkvo_proj` rows are their q, k, v,
  ogate_preact weights stacked; our `gate_proj` is their igate_preact over fgate_preact (weights and biases);
  `multihead_norm.weight` ↔ `norm_weight`, `out_proj` ↔ `out_proj`; qk_dim_factor · hidden = num_heads · head_dim,
  v_dim_factor / qk_dim_factor = expand_v. Their norm casts to float32 unless norm_reduction_force_float32 is
  off, so it is off here; their "train" mode runs the chunkwise kernel and takes and returns the state.

Everything runs in float64; the oracle must agree to 1e-8 (values and input gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_grads_close
from pulse import contract
from pulse.blocks.mixers.mlstm import MLSTM
from pulse.ops.mlstm import chunk_mlstm, mlstm_reference

# the oracle is Transformers' (the `hf` extra, which the README's test command installs)
hf = pytest.importorskip("transformers.models.xlstm.modeling_xlstm",
                         reason="the hf extra (pip install 'pulse[hf]') is not installed: it holds the oracle")
xLSTMConfig = hf.xLSTMConfig

F64 = torch.float64
ORACLE = {"rtol": 1e-8, "atol": 1e-8}


def inputs(b=2, h=3, t=11, k=5, v=4, *, seed=0, state=True):
    """q, k, v, ĩ, the forget pre-activation f̃' and (C, n, m), all float64 leaves needing gradients."""
    gen = torch.Generator().manual_seed(seed)
    q, key = torch.randn(b, h, t, k, generator=gen, dtype=F64), torch.randn(b, h, t, k, generator=gen, dtype=F64)
    val = torch.randn(b, h, t, v, generator=gen, dtype=F64)
    log_i, f_pre = (torch.randn(b, h, t, generator=gen, dtype=F64) * 3 for _ in range(2))
    init = (torch.randn(b, h, k, v, generator=gen, dtype=F64), torch.randn(b, h, k, generator=gen, dtype=F64),
            torch.randn(b, h, generator=gen, dtype=F64)) if state else None
    leaves = [q, key, val, log_i, f_pre, *(init or ())]
    for z in leaves:
        z.requires_grad_(True)
    return (q, key, val, log_i, f_pre, init), leaves


def close(actual, expected, what):
    torch.testing.assert_close(actual, expected, **ORACLE, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("t,chunk", [(1, 4), (7, 4), (16, 4), (13, 64), (10, 1)])
@pytest.mark.parametrize("starts", [False, True])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_chunked_equals_the_per_token_reference(t, chunk, starts, forget):
    (q, k, v, log_i, f_pre, init), leaves = inputs(t=t, seed=t + chunk)
    log_f = F.logsigmoid(f_pre) if forget == "sigmoid" else f_pre * 0.3  # exp: f can pass 1, m follows it up
    resets = (torch.rand(2, t, generator=torch.Generator().manual_seed(t)) < 0.25) if starts else None
    fast = chunk_mlstm(q, k, v, log_i, log_f, init, resets, chunk_size=chunk)
    slow = mlstm_reference(q, k, v, log_i, log_f, init, resets)
    assert_grads_close([fast[0], *fast[1]], [slow[0], *slow[1]], leaves,
                       f"mlstm t={t} chunk={chunk} starts={starts} forget={forget}")


def test_long_sequences_stay_finite_in_float32():
    # strong input gates: e^{ĩ} alone would overflow float32; the stabiliser keeps every exponent ≤ 0
    (q, k, v, log_i, f_pre, _), _ = inputs(b=1, h=2, t=700, seed=3, state=False)
    log_i = log_i.detach() * 30 + 60
    out, (C, n, m) = chunk_mlstm(*(z.detach().float() for z in (q, k, v, log_i, F.logsigmoid(f_pre))))
    ref, _ = mlstm_reference(q.detach(), k.detach(), v.detach(), log_i, F.logsigmoid(f_pre.detach()))
    assert all(torch.isfinite(z).all() for z in (out, C, n, m)) and float(m.max()) > 80
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-4)


def test_op_equals_transformers_recurrent_kernel():
    (q, k, v, log_i, f_pre, (C0, n0, m0)), leaves = inputs(t=13)
    ours, (C, n, m) = chunk_mlstm(q, k, v, log_i, F.logsigmoid(f_pre), (C0, n0, m0), chunk_size=4)
    theirs, (tC, tn, tm) = hf.mlstm_recurrent_sequence_native(
        q, k, v, log_i, f_pre, C0, n0, m0.unsqueeze(-1), return_last_states=True, eps=1e-6, dtype_state=F64)
    for a, b, what in ((ours, theirs, "h"), (C, tC, "C"), (n, tn, "n"), (m, tm.squeeze(-1), "m")):
        close(a, b, f"recurrent oracle {what}")
    w = torch.randn_like(ours)
    for g_a, g_b in zip(torch.autograd.grad((ours * w).sum() + C.sum() + m.sum(), leaves, retain_graph=True),
                        torch.autograd.grad((theirs * w).sum() + tC.sum() + tm.sum(), leaves)):
        close(g_a, g_b, "recurrent oracle gradient")


def test_op_equals_transformers_chunkwise_kernel():
    # their chunkwise kernel needs t a multiple of its chunk (8); ours chunks by 5, so the chunk grids differ
    (q, k, v, log_i, f_pre, (C0, n0, m0)), leaves = inputs(t=24, seed=1)
    ours, (C, n, m) = chunk_mlstm(q, k, v, log_i, F.logsigmoid(f_pre), (C0, n0, m0), chunk_size=5)
    theirs, (tC, tn, tm) = hf.mlstm_chunkwise_native_autograd(
        q, k, v, log_i, f_pre, C0, n0, m0.unsqueeze(-1), return_last_states=True, chunk_size=8)
    for a, b, what in ((ours, theirs, "h"), (C, tC, "C"), (n, tn, "n"), (m, tm.squeeze(-1), "m")):
        close(a, b, f"chunkwise oracle {what}")
    w = torch.randn_like(ours)
    for g_a, g_b in zip(torch.autograd.grad((ours * w).sum() + n.sum(), leaves, retain_graph=True),
                        torch.autograd.grad((theirs * w).sum() + tn.sum(), leaves)):
        close(g_a, g_b, "chunkwise oracle gradient")


def paired_layers(dim=16, heads=2, chunk=8):
    """Transformers' xLSTMLayer (xLSTM-7B's "single" weights) with random weights, and our block with them copied."""
    config = xLSTMConfig(hidden_size=dim, num_heads=heads, qk_dim_factor=0.5, v_dim_factor=1.0, gate_soft_cap=15.0,
                         weight_mode="single", use_bias=False, norm_reduction_force_float32=False, mode="train",
                         chunk_size=chunk, return_last_states=True, eps=1e-6, norm_eps=1e-6)
    torch.manual_seed(0)
    theirs = hf.xLSTMLayer(config).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    ours = MLSTM(dim, num_heads=heads, head_dim=dim // 2 // heads, expand_v=2.0, chunk_size=5, gate_soft_cap=15.0,
                 eps=1e-6, norm_eps=1e-6, dtype=F64)
    with torch.no_grad():
        ours.qkvo_proj.weight.copy_(torch.cat([theirs.q.weight, theirs.k.weight, theirs.v.weight,
                                               theirs.ogate_preact.weight]))
        ours.gate_proj.weight.copy_(torch.cat([theirs.igate_preact.weight, theirs.fgate_preact.weight]))
        ours.gate_proj.bias.copy_(torch.cat([theirs.igate_preact.bias, theirs.fgate_preact.bias]))
        ours.norm_weight.copy_(theirs.multihead_norm.weight)
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
    return ours, theirs


def test_block_equals_transformers_layer():
    ours, theirs = paired_layers()
    x = torch.randn(2, 16, 16, dtype=F64, requires_grad=True)
    x_next = torch.randn(2, 8, 16, dtype=F64, requires_grad=True)
    y, state = ours(x)
    y2, _ = ours(x_next, state)
    ty, tstate = theirs(x)
    ty2, _ = theirs(x_next, tstate)  # continuing from the carried (C, n, m)
    close(y, ty, "layer oracle")
    close(y2, ty2, "layer oracle, continued from the state")
    close(state["m"], tstate[2].squeeze(-1), "layer oracle state m")
    w, w2 = torch.randn_like(y), torch.randn_like(y2)
    g = torch.autograd.grad((y * w).sum() + (y2 * w2).sum(), (x, x_next))
    tg = torch.autograd.grad((ty * w).sum() + (ty2 * w2).sum(), (x, x_next))
    for a, b in zip(g, tg):
        close(a, b, "layer oracle input gradient")


def test_step_equals_forward_and_continues_it():
    ours, _ = paired_layers()
    x = torch.randn(2, 12, 16, dtype=F64)
    y, state = ours(x[:, :9])
    contract.check_step(ours, x)
    for t in range(9, 12):
        y_t, state = ours.step(x[:, t], state)
        contract.assert_close(y_t, ours(x)[0][:, t], f"step {t} after a forward")


def test_document_starts_reset_the_state():
    ours, _ = paired_layers()
    x = torch.randn(2, 13, 16, dtype=F64)
    contract.check_documents(ours, x, [[0, 4, 5], [7, 12]], torch.randn(2, 3, 16, dtype=F64))
    state = ours(x[:, :6])[1]
    fresh = ours.step(x[:, 6], ours.init_state(2, dtype=F64))[0]
    restarted = ours.step(x[:, 6], state, doc_starts=torch.tensor([True, False]))[0]
    contract.assert_close(restarted[0], fresh[0], "step with a start equals a fresh state")


def test_bad_sizes_are_refused():
    from pulse.errors import PulseError

    with pytest.raises(PulseError, match="expand_v"):
        MLSTM(16, head_dim=3, expand_v=0.5)
    with pytest.raises(PulseError, match="gate_soft_cap"):
        MLSTM(16, gate_soft_cap=0.0)
    with pytest.raises(PulseError, match="state"):
        MLSTM(16, num_heads=2, head_dim=4)(torch.randn(1, 3, 16), {"C": torch.zeros(1)})
