"""The generalized delta rule (pulse.ops.generalized_delta) and the kinds built on it or on the delta rule:
the chunkwise form against the per-token loop, KDA's transition with a scalar decay against the delta rule,
and Gated DeltaProduct with one step per token against Gated DeltaNet. The block contract of `kda` and
`gated_deltaproduct` runs over the registry in test_mixer_properties.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pulse
from pulse.contract import assert_close
from pulse.ops.delta_rule import recurrent_delta_rule
from pulse.ops.generalized_delta import chunk_generalized_delta, recurrent_generalized_delta

F64 = torch.float64


def kda_inputs(b, h, t, k, v, gen):
    """KDA's a, b and write from random keys, βs and per-channel decays, all leaves that need gradients."""
    q = torch.randn(b, h, t, k, generator=gen, dtype=F64).requires_grad_(True)
    keys = torch.nn.functional.normalize(torch.randn(b, h, t, k, generator=gen, dtype=F64), dim=-1)
    keys.requires_grad_(True)
    vals = torch.randn(b, h, t, v, generator=gen, dtype=F64).requires_grad_(True)
    beta = torch.rand(b, h, t, 1, generator=gen, dtype=F64).requires_grad_(True)
    log_w = (-3 * torch.rand(b, h, t, k, generator=gen, dtype=F64)).requires_grad_(True)
    s0 = torch.randn(b, h, k, v, generator=gen, dtype=F64).requires_grad_(True)
    return (q, keys, vals, beta, log_w, s0)


def kda_call(fn, leaves, resets, **kw):
    q, keys, vals, beta, log_w, s0 = leaves
    return fn(q, beta * keys, vals, -beta * keys, keys * log_w.exp(), log_w, s0, resets, **kw)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 30), st.integers(1, 12), st.booleans(), st.integers(0, 2**16))
def test_chunk_form_matches_the_recurrence_in_values_and_gradients(b, t, c, with_starts, seed):
    gen = torch.Generator().manual_seed(seed)
    leaves = kda_inputs(b, 2, t, 4, 3, gen)
    resets = (torch.rand(b, t, generator=gen) < 0.2) if with_starts else None
    outs = [kda_call(chunk_generalized_delta, leaves, resets, chunk_size=c),
            kda_call(recurrent_generalized_delta, leaves, resets)]
    weights = [torch.randn_like(z) for z in outs[0]]
    grads = []
    for out in outs:
        loss = sum((z * w).sum() for z, w in zip(out, weights))
        got = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads.append([torch.zeros_like(x) if g is None else g for g, x in zip(got, leaves)])
    for fast, slow in zip(outs[0], outs[1]):
        assert_close(fast, slow, "values")
    for fast, slow in zip(*grads):
        assert_close(fast, slow, "gradients")


def test_a_scalar_decay_is_the_gated_delta_rule():
    gen = torch.Generator().manual_seed(0)
    q, keys, vals, beta, _, s0 = kda_inputs(2, 3, 21, 5, 4, gen)
    log_decay = -torch.rand(2, 3, 21, generator=gen, dtype=F64)
    log_w = log_decay.unsqueeze(-1).expand(-1, -1, -1, 5)
    ours, s_ours = chunk_generalized_delta(q, beta * keys, vals, -beta * keys, keys * log_w.exp(), log_w, s0,
                                           chunk_size=8)
    theirs, s_theirs = recurrent_delta_rule(q, keys, vals, beta[..., 0], log_decay, s0)
    assert_close(ours, theirs, "outputs")
    assert_close(s_ours, s_theirs, "state")


def test_chunks_past_the_factored_range_take_the_pairwise_form_with_the_same_results():
    """A chunk whose decay passes the factored form's range (here 1,000 nats in float64) is summed pairwise;
    its neighbours stay factored. Values and gradients still equal the recurrence."""
    gen = torch.Generator().manual_seed(3)
    leaves = list(kda_inputs(2, 2, 24, 4, 3, gen))
    strong = torch.zeros(2, 2, 24, 4, dtype=F64)
    strong[0, 1, 9] = -1000.0  # one token that forgets (almost) everything in one head of one row
    strong[1, 0, 17:19, :2] = -600.0  # two channels across two tokens
    leaves[4] = (leaves[4].detach() + strong).requires_grad_(True)
    outs = [kda_call(chunk_generalized_delta, leaves, None, chunk_size=8),
            kda_call(recurrent_generalized_delta, leaves, None)]
    weights = [torch.randn_like(z) for z in outs[0]]
    grads = [torch.autograd.grad(sum((z * w).sum() for z, w in zip(out, weights)), leaves) for out in outs]
    for fast, slow in zip(outs[0], outs[1]):
        assert_close(fast, slow, "values")
    for fast, slow in zip(*grads):
        assert torch.isfinite(fast).all()
        assert_close(fast, slow, "gradients")


def test_strong_decays_stay_finite():
    """Decays near zero (log w = −60 per token) form no positive exponent: no overflow, no NaN."""
    gen = torch.Generator().manual_seed(1)
    q, keys, vals, beta, _, s0 = kda_inputs(1, 1, 40, 4, 3, gen)
    log_w = torch.full((1, 1, 40, 4), -60.0, dtype=torch.float32)
    args = [z.detach().float() for z in (q, beta * keys, vals, -beta * keys, keys * log_w.exp())]
    out, state = chunk_generalized_delta(*args, log_w, s0.detach().float(), chunk_size=16)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()


@pytest.mark.parametrize("dim", [16, 24])
def test_deltaproduct_with_one_step_per_token_is_gated_deltanet(dim):
    torch.manual_seed(0)
    gdp = pulse.build_mixer("gated_deltaproduct", dim, num_householder=1, head_dim=8, chunk_size=4, dtype=F64)
    gdn = pulse.build_mixer("gated_deltanet", dim, head_dim=8, chunk_size=4, dtype=F64)
    gdn.load_state_dict(gdp.state_dict())
    x = torch.randn(2, 13, dim, dtype=F64)
    assert_close(gdp(x)[0], gdn(x)[0], "one Householder step per token")
    assert_close(gdp(x, doc_starts=[[3], [0, 7]])[0], gdn(x, doc_starts=[[3], [0, 7]])[0], "with document starts")


def test_routed_memory_with_one_memory_and_no_shared_one_is_gated_deltanet():
    torch.manual_seed(0)
    routed = pulse.build_mixer("pulse_routed", 16, num_memories=1, top_k=1, shared=False, head_dim=8,
                               chunk_size=4, dtype=F64)
    gdn = pulse.build_mixer("gated_deltanet", 16, head_dim=8, chunk_size=4, dtype=F64)
    weights = {**routed.state_dict(), "in_proj.weight": routed.in_proj.weight[:-1]}  # the last row: the router
    gdn.load_state_dict(weights)
    x = torch.randn(2, 11, 16, dtype=F64)
    assert_close(routed(x)[0], gdn(x)[0], "one memory, always chosen")


def test_a_memory_no_token_is_routed_to_is_left_untouched():
    torch.manual_seed(0)
    m = pulse.build_mixer("pulse_routed", 16, num_memories=4, top_k=1, head_dim=8, chunk_size=4, dtype=F64)
    x = torch.randn(1, 9, 16, dtype=F64)
    _, state = m(x)
    tok = torch.randn(1, 16, dtype=F64)
    logits = m.in_proj(tok)[..., -m.num_memories:]
    chosen, _ = m.route(logits)
    _, after = m.step(tok, state)
    banks = lambda s: s["kv"].view(1, m.banks, m.num_heads, *s["kv"].shape[-2:])  # noqa: E731
    for memory in range(m.num_memories):
        same = torch.equal(banks(after)[:, 1 + memory], banks(state)[:, 1 + memory])
        assert same != bool(chosen[0, memory]), f"memory {memory}: chosen={bool(chosen[0, memory])}"
    assert not torch.equal(banks(after)[:, 0], banks(state)[:, 0])  # the shared memory is always written


@pytest.mark.parametrize("top_k", [1, 2])
def test_routed_memories_over_their_own_tokens_equal_the_recurrence_over_all_tokens(top_k):
    """`forward` runs each routed memory over its routed tokens only (pulse.ops.routing); `step` holds the
    unchosen memories token by token. With a carried state, two rows and document starts (one after some
    memory's last token, which must then end the window empty) both give the same outputs and state."""
    torch.manual_seed(2)
    m = pulse.build_mixer("pulse_routed", 16, num_memories=3, top_k=top_k, head_dim=8, chunk_size=4, dtype=F64)
    x, warm = torch.randn(2, 14, 16, dtype=F64), torch.randn(2, 5, 16, dtype=F64)
    _, state = m(warm)
    starts = [[4, 13], [0, 9]]
    out, final = m(x, state, doc_starts=starts)
    steps, s = [], state
    for i in range(x.shape[1]):
        y, s = m.step(x[:, i], s, doc_starts=torch.tensor([i in row for row in starts]))
        steps.append(y)
    assert_close(out, torch.stack(steps, dim=1), "outputs")
    assert_close(final["kv"], s["kv"], "state")


def test_chunks_halve_where_most_would_decay_past_the_factored_range():
    """Strong decays everywhere (50 nats a token in float64, 800 per 16-token chunk) run in chunks of 8, each
    inside the factored range (400); mild ones keep the asked length. The results equal the recurrence."""
    from pulse.ops.generalized_delta import _chunk_for

    strong, mild = torch.full((1, 2, 40, 4), -50.0, dtype=F64), torch.full((1, 2, 40, 4), -0.5, dtype=F64)
    assert _chunk_for(strong, 16) == 8 and _chunk_for(mild, 16) == 16
    assert _chunk_for(torch.full((1, 2, 40, 4), -500.0, dtype=F64), 16) == 4  # past the range even per token
    gen = torch.Generator().manual_seed(4)
    leaves = list(kda_inputs(1, 2, 40, 4, 3, gen))
    leaves[4] = (leaves[4].detach() + strong).requires_grad_(True)
    fast = kda_call(chunk_generalized_delta, leaves, None, chunk_size=16)
    slow = kda_call(recurrent_generalized_delta, leaves, None)
    for a, b in zip(fast, slow):
        assert_close(a, b, "values")
