"""Gated DeltaNet-2 (`gated_deltanet2`, pulse/blocks/mixers/gated_deltanet2.py): its rule chunkwise against its
per-token loop, against fla's own reference (the outside oracle), against KDA with b = w = β, and the block's step
and document starts. The registry-wide block contract runs in test_mixer_properties.py.

The oracle is fla-core's `fla/ops/gdn2/naive.py` `naive_recurrent_gdn2`, loaded by path (tests/oracles.py). How
its conventions map onto PULSE's `gdn2_rule(q, k, v, erase, write, log_alpha, state)`:
- layout: fla's q, k, g, b are (B, T, H, K) and v, w (B, T, H, V); PULSE's are (b, h, t, ·): transpose(1, 2).
  The state is (B, H, K, V) in both, S ∈ ℝ^{k×v} read as o_t = S_tᵀ q_t.
- scale: fla multiplies q by `scale` (default K^−1/2); PULSE's op takes q already scaled (the block divides by √k),
  so the oracle runs with scale = 1.
- gates: fla's g (log decay, per key channel) is PULSE's log α; fla's erase gate b (on k) and write gate w (on v)
  are PULSE's `erase` and `write`, both the raw gate values (the σ is the layer's, outside either op).
- transition: fla decays first, reads the erase at b ⊙ k, writes k (w ⊙ v − that read), i.e.
  S_t = (I − k (b ⊙ k)ᵀ) Diag(e^g) S_{t−1} + k (w ⊙ v)ᵀ; PULSE writes it as the generalized delta rule (its a/b
  convention: b the read direction) with log w = g, a = −k, b = b ⊙ k ⊙ e^g, the write k (w ⊙ v).
- precision: fla's naive files compute in float32 (`.float()`, `torch.float32`); to hold them to 1e-8 the test
  loads the same source with those casts made float64 (`fla_naive_float64`; nothing else in the text changes,
  and the test checks each cast it rewrites is there).
"""

from __future__ import annotations

import pytest
import torch

import pulse
from oracles import fla_naive_float64
from pulse.blocks.mixers.gated_deltanet2 import gdn2_rule, gdn2_rule_reference
from pulse.contract import assert_close, check_documents, check_step
from pulse.ops.generalized_delta import kda_rule

F64 = torch.float64
ORACLE_TOL = 1e-8


def gdn2_leaves(b, h, t, k, v, gen):
    """q, unit keys, values, erase gate (k), write gate (v), log α (k), initial state: leaves that need gradients."""
    q = torch.randn(b, h, t, k, generator=gen, dtype=F64)
    keys = torch.nn.functional.normalize(torch.randn(b, h, t, k, generator=gen, dtype=F64), dim=-1)
    vals = torch.randn(b, h, t, v, generator=gen, dtype=F64)
    erase = torch.rand(b, h, t, k, generator=gen, dtype=F64)
    write = torch.rand(b, h, t, v, generator=gen, dtype=F64)
    log_alpha = -2 * torch.rand(b, h, t, k, generator=gen, dtype=F64)
    s0 = torch.randn(b, h, k, v, generator=gen, dtype=F64)
    return [z.requires_grad_(True) for z in (q, keys, vals, erase, write, log_alpha, s0)]


def values_and_grads(outs, leaves, weights):
    loss = sum((z * w).sum() for z, w in zip(outs, weights))
    return [z.detach() for z in outs], torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(("t", "chunk"), [(1, 16), (13, 4), (24, 8), (30, 16)])
def test_chunkwise_rule_equals_its_per_token_loop(t, chunk):
    gen = torch.Generator().manual_seed(t)
    leaves = gdn2_leaves(2, 2, t, 4, 3, gen)
    resets = torch.rand(2, t, generator=gen) < 0.2
    fast = gdn2_rule(*leaves, resets, chunk_size=chunk)
    slow = gdn2_rule_reference(*leaves, resets)
    weights = [torch.randn_like(z) for z in fast]
    (vf, gf), (vs, gs) = values_and_grads(fast, leaves, weights), values_and_grads(slow, leaves, weights)
    for a, b in zip(vf + list(gf), vs + list(gs)):
        assert_close(a, b, "chunkwise vs per-token")


@pytest.mark.parametrize("oracle", ["naive_recurrent_gdn2", "naive_chunk_gdn2"])
@pytest.mark.parametrize("rule", [gdn2_rule, gdn2_rule_reference], ids=["chunkwise", "per-token"])
def test_rule_equals_fla_naive_gdn2_in_float64(rule, oracle):
    """The outside oracle: values (outputs, final state) and gradients w.r.t. q, k, v, the erase and write gates,
    the log decay and the initial state within 1e-8 of fla's `naive_recurrent_gdn2` (and of its chunkwise
    `naive_chunk_gdn2`, at fla's chunk of 8 tokens and 21 tokens: a padded last chunk)."""
    gen = torch.Generator().manual_seed(7)
    leaves = gdn2_leaves(2, 3, 21, 5, 4, gen)
    q, k, v, erase, write, log_alpha, s0 = leaves
    ours = rule(*leaves, chunk_size=8) if rule is gdn2_rule else rule(*leaves)
    tr = lambda z: z.transpose(1, 2)  # noqa: E731  (b, h, t, ·) ↔ fla's (B, T, H, ·)
    extra = {"chunk_size": 8} if oracle == "naive_chunk_gdn2" else {}
    o, s = getattr(fla_naive_float64("gdn2"), oracle)(tr(q), tr(k), tr(v), g=tr(log_alpha), b=tr(erase),
                                                       w=tr(write), scale=1.0, initial_state=s0,
                                                       output_final_state=True, **extra)
    assert o.dtype == F64
    theirs = (tr(o), s)
    weights = [torch.randn_like(z) for z in ours]
    (vo, go), (vt, gt) = values_and_grads(ours, leaves, weights), values_and_grads(theirs, leaves, weights)
    names = ["outputs", "state"] + [f"d/d{n}" for n in ("q", "k", "v", "erase", "write", "log_alpha", "state0")]
    for a, b, name in zip(vo + list(go), vt + list(gt), names):
        torch.testing.assert_close(a, b, rtol=ORACLE_TOL, atol=ORACLE_TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_equal_erase_and_write_gates_are_kda():
    """b = w = β (one scalar per head and token, broadcast) gives PULSE's KDA op on the same inputs."""
    gen = torch.Generator().manual_seed(3)
    q, k, v, _, _, log_alpha, s0 = (z.detach() for z in gdn2_leaves(2, 2, 19, 4, 3, gen))
    beta = torch.rand(2, 2, 19, generator=gen, dtype=F64)
    b = beta.unsqueeze(-1)
    ours = gdn2_rule(q, k, v, b.expand_as(k), b.expand_as(v), log_alpha, s0, chunk_size=8)
    theirs = kda_rule(q, k, v, beta, log_alpha, s0, chunk_size=8)
    for a, t in zip(ours, theirs):
        assert_close(a, t, "b = w = β vs kda")


def test_block_with_the_beta_row_copied_into_both_gates_is_the_kda_block():
    """A gated_deltanet2 block whose erase rows (per key channel) and write rows (per value channel) are each
    KDA's β row of their head computes what the kda block with the same weights does."""
    torch.manual_seed(0)
    kw = {"num_heads": 2, "head_dim": 4, "expand_v": 1.5, "chunk_size": 4, "dtype": F64}
    gdn2 = pulse.build_mixer("gated_deltanet2", 16, **kw)
    kda = pulse.build_mixer("kda", 16, **kw)
    K, V, h = kda.key_width, kda.value_width, kda.num_heads
    weights = kda.state_dict()
    shared, beta = weights["in_proj.weight"].split((2 * K + 2 * V, h))
    weights["in_proj.weight"] = torch.cat((shared, beta.repeat_interleave(kda.head_dim, 0),
                                           beta.repeat_interleave(kda.head_v, 0)))
    gdn2.load_state_dict(weights)
    x = torch.randn(2, 11, 16, dtype=F64)
    assert_close(gdn2(x)[0], kda(x)[0], "gated_deltanet2 with b = w = β vs kda")


def test_step_by_step_decoding_equals_the_full_forward():
    torch.manual_seed(1)
    block = pulse.build_mixer("gated_deltanet2", 16, num_heads=2, head_dim=4, chunk_size=4, dtype=F64)
    check_step(block, torch.randn(2, 13, 16, dtype=F64))


def test_document_starts_reset_the_state():
    torch.manual_seed(2)
    block = pulse.build_mixer("gated_deltanet2", 16, num_heads=2, head_dim=4, chunk_size=4, dtype=F64)
    x, x_next = torch.randn(2, 15, 16, dtype=F64), torch.randn(2, 3, 16, dtype=F64)
    check_documents(block, x, [[4, 9], [0, 6, 7]], x_next)


def test_parameter_count_formula():
    block = pulse.build_mixer("gated_deltanet2", 24, num_heads=3, head_dim=4, expand_v=2.0, decay_rank=3)
    assert block.param_count() == sum(p.numel() for p in block.parameters())
