"""RG-LRU (Griffin / Hawk): the parallel scan equals the per-token reference, the block equals Transformers'
RecurrentGemmaRecurrentBlock (the outside oracle), step equals forward, document starts reset the state.

The oracle is transformers.models.recurrent_gemma's own PyTorch block, built from a tiny RecurrentGemmaConfig
in float64, its weights drawn at random and copied into PULSE's block by `from_transformers` below:

- `linear_x`, `linear_y`, `linear_out` (weights and biases): the same names and layouts;
- `conv_1d.weight` (l, 1, w) → `conv_weight` (l, w) (the depthwise conv's middle axis dropped; both read tap i
  as x_{t−w+1+i}: theirs pads w−1 zeros on the left and keeps the first t outputs); `conv_1d.bias` → `conv_bias`;
- `rg_lru.recurrent_param` (l) → `recurrent_param` (a = exp(−8 · r · softplus(λ)) on both sides);
- `rg_lru.{input,recurrent}_gate_{weight,bias}` → the same names: weights (h, e, e) applied as x_head @ W[head]
  (in, out), biases (h, e);
- num_attention_heads → num_heads, lru_width → lru_width, conv1d_width → conv_size; hidden_activation
  "gelu_pytorch_tanh" (their default) is F.gelu(approximate="tanh").

Their reset is position_ids == 0 (a = 0, the √(1 − a²) factor 1): it matches PULSE's first token of a fresh
state. They accumulate the scan in float32 (`_rnn_scan(acc_dtype=torch.float32)`); the oracle is run with
acc_dtype float64, so both sides compute in float64 and agree to 1e-8.
"""

from __future__ import annotations

import functools

import pytest
import torch

import pulse
from pulse import contract
from pulse.blocks.mixers.rglru import RGLRU
from pulse.ops.rglru import rglru, rglru_reference

# the oracle is Transformers' (the `hf` extra, which the README's test command installs)
hf = pytest.importorskip("transformers.models.recurrent_gemma.modeling_recurrent_gemma",
                         reason="the hf extra (pip install 'pulse[hf]') is not installed: it holds the oracle")
RecurrentGemmaConfig = hf.RecurrentGemmaConfig

F64 = torch.float64
TOL = {"rtol": 1e-8, "atol": 1e-8}


@pytest.fixture
def oracle(monkeypatch):
    """A tiny RecurrentGemmaRecurrentBlock in float64 with random weights, and PULSE's block with its weights."""
    monkeypatch.setattr(hf.RecurrentGemmaRglru, "_rnn_scan",
                        functools.partialmethod(hf.RecurrentGemmaRglru._rnn_scan, acc_dtype=F64))
    config = RecurrentGemmaConfig(hidden_size=16, lru_width=24, num_attention_heads=4, conv1d_width=4,
                                  hidden_activation="gelu_pytorch_tanh")
    torch.manual_seed(0)
    theirs = hf.RecurrentGemmaRecurrentBlock(config, layer_idx=0).to(F64)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.normal_(std=0.5)
        # decays spread over (0, 1), as Griffin's init draws them
        theirs.rg_lru.recurrent_param.copy_(torch.linspace(-3.0, 1.0, config.lru_width, dtype=F64))
    mine = from_transformers(theirs, dim=16, dtype=F64)
    return theirs, mine


def from_transformers(block: hf.RecurrentGemmaRecurrentBlock, *, dim: int, dtype=None) -> RGLRU:
    """PULSE's RGLRU holding the weights of a Transformers RecurrentGemmaRecurrentBlock (the map above)."""
    conv = block.conv_1d
    mine = RGLRU(dim, num_heads=block.rg_lru.num_attention_heads, lru_width=block.lru_width,
                 conv_size=conv.kernel_size[0], dtype=dtype)
    theirs = {k: v for k, v in block.state_dict().items() if not k.startswith("conv_1d.")}
    weights = {k.removeprefix("rg_lru."): v for k, v in theirs.items()}
    weights["conv_weight"] = conv.weight.squeeze(1)
    weights["conv_bias"] = conv.bias
    mine.load_state_dict(weights, strict=True)
    return mine


def test_sequence_equals_transformers(oracle):
    theirs, mine = oracle
    x = torch.randn(3, 13, 16, dtype=F64, requires_grad=True)
    w = torch.randn(3, 13, 16, dtype=F64)
    position_ids = torch.arange(13).expand(3, 13)
    y_theirs, _ = theirs(x, position_ids=position_ids, attention_mask=None, use_cache=False)
    (g_theirs,) = torch.autograd.grad((y_theirs * w).sum(), x)
    y_mine, _ = mine(x)
    (g_mine,) = torch.autograd.grad((y_mine * w).sum(), x)
    torch.testing.assert_close(y_mine, y_theirs, **TOL)
    torch.testing.assert_close(g_mine, g_theirs, **TOL)
    assert (y_mine - y_theirs).abs().max() < 1e-10


def test_parameter_gradients_equal_transformers(oracle):
    theirs, mine = oracle
    x = torch.randn(2, 9, 16, dtype=F64)
    y, _ = theirs(x, position_ids=torch.arange(9).expand(2, 9), attention_mask=None, use_cache=False)
    y.square().sum().backward()
    mine(x)[0].square().sum().backward()
    grads = dict(mine.named_parameters())
    for name, p in theirs.named_parameters():
        if name.startswith("conv_1d."):
            ours = grads["conv_weight"].grad.unsqueeze(1) if name.endswith("weight") else grads["conv_bias"].grad
        else:
            ours = grads[name.removeprefix("rg_lru.")].grad
        torch.testing.assert_close(ours, p.grad, **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("prefill", [0, 4])
def test_decoding_equals_transformers(oracle, prefill):
    """Their cached decoding (a prefill of `prefill` tokens, then one token at a time from position `prefill`)
    against PULSE's forward then step from the state it returned (prefill 0: both step from the first token)."""
    theirs, mine = oracle
    x = torch.randn(2, 10, 16, dtype=F64)
    # their cache is made (width hidden_size, not lru_width: a slip that real checkpoints, whose widths are
    # equal, never meet) by the first call, and a prefill overwrites it; decoding from the first token reads it
    theirs.conv1d_state = torch.zeros(2, theirs.lru_width, theirs.conv1d_width - 1, dtype=F64)
    theirs.rg_lru.recurrent_states = torch.zeros(2, theirs.lru_width, dtype=F64)
    outs, ours, state = [], [], mine.init_state(2, dtype=F64)
    with torch.no_grad():
        if prefill:
            outs.append(theirs(x[:, :prefill], position_ids=torch.arange(prefill).expand(2, prefill),
                               attention_mask=None, use_cache=True)[0])
            y, state = mine(x[:, :prefill], state)
            ours.append(y)
        for t in range(prefill, 10):
            outs.append(theirs(x[:, t : t + 1], position_ids=torch.full((2, 1), t), attention_mask=None,
                               use_cache=True)[0])
            y_t, state = mine.step(x[:, t], state)
            ours.append(y_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(ours, 1), torch.cat(outs, 1), **TOL)


@pytest.mark.parametrize("method", ["loop", "log"])
def test_scan_equals_reference(method):
    """The parallel form (gates for all tokens, then the scan) equals the per-token loop, values and gradients,
    with a carried-in state and resets inside the window."""
    torch.manual_seed(1)
    b, t, h, e = 2, 23, 3, 4
    x = torch.randn(b, t, h * e, dtype=F64)
    params = [torch.randn(h, e, e, dtype=F64) * 0.5, torch.randn(h, e, dtype=F64),
              torch.randn(h, e, e, dtype=F64) * 0.5, torch.randn(h, e, dtype=F64),
              torch.linspace(-3.0, 1.0, h * e, dtype=F64)]
    h0 = torch.randn(b, h * e, dtype=F64)
    resets = torch.zeros(b, t, dtype=torch.bool)
    resets[0, 5] = resets[1, 0] = resets[1, 17] = True
    inputs = [z.requires_grad_(True) for z in (x, *params, h0)]
    weights = torch.randn(b, t, h * e, dtype=F64)
    outs = []
    for fn in (functools.partial(rglru, method=method), rglru_reference):
        states, last = fn(*inputs, resets)
        grads = torch.autograd.grad((states * weights).sum() + last.square().sum(), inputs)
        outs.append((states, last, grads))
    (s1, l1, g1), (s2, l2, g2) = outs
    torch.testing.assert_close(s1, s2, **TOL)
    torch.testing.assert_close(l1, l2, **TOL)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, **TOL)


def test_step_and_documents():
    torch.manual_seed(2)
    m = pulse.build_mixer("rglru", 16, num_heads=2, lru_width=8, dtype=F64)
    x = torch.randn(2, 12, 16, dtype=F64)
    contract.check_step(m, x)
    contract.check_split(m, x, 5)
    contract.check_documents(m, x, [[0, 4, 9], [6]], torch.randn(2, 3, 16, dtype=F64))
    # a document start in `step` gives the output of a fresh sequence
    _, state = m(x[:, :7])
    y_reset, _ = m.step(x[:, 7], state, doc_starts=torch.tensor([True, False]))
    y_fresh, _ = m.step(x[:, 7], m.init_state(2, dtype=F64))
    torch.testing.assert_close(y_reset[0], y_fresh[0], **TOL)
    assert not torch.allclose(y_reset[1], y_fresh[1])


def test_sizes_and_formulas():
    m = RGLRU(24, num_heads=3, lru_width=12, conv_size=3)
    assert m.param_count() == sum(p.numel() for p in m.parameters())
    _, state = m(torch.randn(1, 5, 24))
    assert m.state_numel(5) == sum(s.numel() for s in contract.tensors(state))
    with pytest.raises(pulse.PulseError, match="num_heads"):
        RGLRU(16, num_heads=3)
    with pytest.raises(pulse.PulseError, match="num_heads"):
        pulse.build_mixer("rglru", 16, num_heads=5)
