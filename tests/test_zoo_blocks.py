"""The rest of the block zoo: fast paths against their references, numerical safety, validation,
the NTM's addressing and write path, costs, and the hybrid card end to end.

The contract properties (shape, causal, split, step, batch, gradient) run over every registered
mixer in tests/test_mixer_properties.py; the contract checks here cover non-default settings.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pulse
from helpers import assert_grads_close
from pulse import contract
from pulse.blocks.mixers.linear_attention import LinearAttention
from pulse.blocks.mixers.ntm import NTMMemory, address, content_weights, read, write
from pulse.blocks.mixers.sparse_state_attention import SparseStateAttention
from pulse.blocks.mixers.ssm import SelectiveSSM
from pulse.ops.linear_attention import chunk_linear_attention, recurrent_linear_attention
from pulse.ops.selective_scan import selective_scan, selective_scan_reference
from pulse.ops.topk_read import topk_read, topk_read_reference
from pulse.summarize import summarize

F64 = torch.float64
AWKWARD = [(1, 32), (63, 32), (63, 64), (130, 32), (130, 64)]


def run_contract(module, lengths=(1, 5, 19)):
    module = module.double()
    for t in lengths:
        x = torch.randn(2, t, module.dim, dtype=F64)
        contract.check_shape(module, x)
        contract.check_causal(module, x, t // 2)
        contract.check_step(module, x)
        contract.check_batch(module, x, 1)
        contract.check_gradient(module, x)
        if t > 1:
            contract.check_split(module, x, t // 3 or 1)


# linear attention


@pytest.mark.parametrize("t,chunk", AWKWARD)
@pytest.mark.parametrize("decay,normalize", [(False, False), (True, False), (False, True), (True, True)])
def test_linear_attention_chunked_matches_recurrent(t, chunk, decay, normalize):
    torch.manual_seed(t + chunk)
    b, h, k, v = 2, 3, 5, 4
    q, key = torch.rand(b, h, t, k, dtype=F64), torch.rand(b, h, t, k, dtype=F64)
    val, s0, z0 = torch.randn(b, h, t, v, dtype=F64), torch.randn(b, h, k, v, dtype=F64), torch.rand(b, h, k, dtype=F64)
    inputs = [q, key, val, s0] + ([z0] if normalize else [])
    log_decay = None
    if decay:
        log_decay = F.logsigmoid(torch.randn(b, h, t, dtype=F64) * 2)
        inputs.append(log_decay)
    for z in inputs:
        z.requires_grad_(True)
    args = (q, key, val, log_decay, s0, z0 if normalize else None)
    fast = chunk_linear_attention(*args, normalize=normalize, chunk_size=chunk)
    slow = recurrent_linear_attention(*args, normalize=normalize)
    assert (fast.den is None) == (not normalize) and (slow.z is None) == (not normalize)
    fast, slow = [x for x in fast if x is not None], [x for x in slow if x is not None]
    assert_grads_close(fast, slow, inputs, f"linear attention t={t} chunk={chunk} decay={decay} normalize={normalize}")


def test_linear_attention_decay_is_safe_at_16k_tokens():
    # strong decays: the cumulative log-decay over the sequence is far below what exp can represent
    torch.manual_seed(0)
    t = 16_384
    q, k, v = (torch.randn(1, 1, t, 16) for _ in range(3))
    log_decay = -torch.rand(1, 1, t) * 4
    assert log_decay.sum() < -20_000
    k = k.abs()
    fast = chunk_linear_attention(q, k, v, log_decay, normalize=True, chunk_size=64)
    assert all(torch.isfinite(x).all() for x in fast)
    ref = recurrent_linear_attention(q.double(), k.double(), v.double(), log_decay.double(), normalize=True)
    for name, a, r in zip(fast._fields, fast, ref):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_linear_attention_block_with_input_decay_at_16k_tokens():
    torch.manual_seed(0)
    block = LinearAttention(16, num_heads=1, decay="input")
    with torch.no_grad():
        block.decay_proj.bias.fill_(-60.0)  # log α ≈ −3.75 per token
    x = torch.randn(1, 16_384, 16, requires_grad=True)
    y, state = block(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in state.values())
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "params",
    [
        {"feature_map": "relu", "decay": "fixed"},
        {"feature_map": "identity", "normalize": False, "decay": "input"},
        {"feature_map": "elu1", "normalize": False, "decay": "none", "chunk_size": 4},
    ],
)
def test_linear_attention_variants_keep_the_contract(params):
    torch.manual_seed(0)
    run_contract(pulse.build_mixer("linear_attention", 16, num_heads=2, **{"chunk_size": 8, **params}))


def test_linear_attention_rejects_normalised_identity_features():
    with pytest.raises(pulse.PulseError, match="non-negative features"):
        pulse.build_mixer("linear_attention", 16, feature_map="identity", normalize=True)


# selective scan and the SSM block


@pytest.mark.parametrize("t,chunk", AWKWARD)
@pytest.mark.parametrize("group_elements", [1 << 20, 300])
def test_selective_scan_matches_sequential(t, chunk, group_elements):
    torch.manual_seed(t + chunk)
    b, d, n = 2, 3, 4
    x, B, C = torch.randn(b, t, d, dtype=F64), torch.randn(b, t, n, dtype=F64), torch.randn(b, t, n, dtype=F64)
    dt = F.softplus(torch.randn(b, t, d, dtype=F64))
    A, h0 = -torch.rand(d, n, dtype=F64) * 4, torch.randn(b, d, n, dtype=F64)
    inputs = [x, dt, A, B, C, h0]
    for z in inputs:
        z.requires_grad_(True)
    fast = selective_scan(x, dt, A, B, C, h0, chunk_size=chunk, group_elements=group_elements)
    slow = selective_scan_reference(x, dt, A, B, C, h0)
    assert_grads_close(fast, slow, inputs, f"selective scan t={t} chunk={chunk} groups of {group_elements}")


def test_selective_scan_gradcheck():
    torch.manual_seed(0)
    b, t, d, n = 1, 11, 2, 3
    inputs = [
        torch.randn(b, t, d, dtype=F64), F.softplus(torch.randn(b, t, d, dtype=F64)), -torch.rand(d, n, dtype=F64),
        torch.randn(b, t, n, dtype=F64), torch.randn(b, t, n, dtype=F64), torch.randn(b, d, n, dtype=F64),
    ]
    inputs = [z.requires_grad_(True) for z in inputs]
    assert torch.autograd.gradcheck(lambda *z: selective_scan(*z, chunk_size=4, group_elements=50), inputs)


def test_selective_scan_never_overflows_with_huge_steps():
    # Δ·A down to −400 per token: any form that divides by cumulative decays would overflow
    torch.manual_seed(0)
    b, t, d, n = 1, 1000, 4, 8
    x, B, C = torch.randn(b, t, d), torch.randn(b, t, n), torch.randn(b, t, n)
    dt = torch.rand(b, t, d) * 50
    A = -torch.arange(1, n + 1, dtype=torch.float32).expand(d, n).contiguous()
    inputs = [z.requires_grad_(True) for z in (x, dt, A, B, C)]
    y, h = selective_scan(*inputs, chunk_size=64)
    (y.square().mean() + h.square().mean()).backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(z.grad).all() for z in inputs)
    ref, _ = selective_scan_reference(*(z.detach().double() for z in (x, dt, A, B, C)))
    torch.testing.assert_close(y.detach().double(), ref, rtol=1e-4, atol=1e-4)


def test_ssm_variant_keeps_the_contract():
    torch.manual_seed(0)
    run_contract(pulse.build_mixer("ssm", 16, d_state=4, expand=1, conv_size=2, dt_rank=3, chunk_size=4))


def test_ssm_starts_from_s4d_real_and_rejects_bad_steps():
    block = SelectiveSSM(16, d_state=5)
    torch.testing.assert_close(-block.A_log.exp()[3], -torch.arange(1.0, 6.0))
    dt = F.softplus(block.dt_proj.bias)
    assert (dt > 0.9e-3).all() and (dt < 0.11).all()
    with pytest.raises(pulse.PulseError, match="dt_min"):
        pulse.build_mixer("ssm", 16, dt_min=0.5, dt_max=0.1)


# sparse state attention


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_read_matches_dense(k):
    torch.manual_seed(k)
    values = torch.randn(5, 7, 4, dtype=F64, requires_grad=True)
    scores = torch.randn(5, 9, 7, dtype=F64, requires_grad=True)
    kept, idx = scores.topk(k, dim=-1)
    p = kept.softmax(-1)
    fast = (topk_read(values, idx, p),)
    slow = (topk_read_reference(values, idx, p),)
    assert_grads_close(fast, slow, [values, scores], f"top-{k} read")


def test_sparse_attention_rejects_top_k_above_num_states():
    with pytest.raises(pulse.PulseError, match=r"top_k \(9\) is larger than num_slots \(8\)"):
        pulse.build_mixer("sparse_state_attention", 16, num_slots=8, top_k=9)
    recipe = {
        "model": {"layout": ["s"], "mixers": {"s": {"kind": "sparse_state_attention", "num_slots": 4, "top_k": 5}}}
    }
    with pytest.raises(pulse.PulseError, match="model.mixers.s.*lower top_k to at most 4"):
        pulse.recipe_from_dict(recipe)


@pytest.mark.parametrize("chunk,slots,k", [(1, 5, 5), (4, 8, 3), (7, 6, 1)])
def test_sparse_attention_variants_keep_the_contract(chunk, slots, k):
    torch.manual_seed(0)
    run_contract(pulse.build_mixer(
        "sparse_state_attention", 16, num_slots=slots, top_k=k, num_heads=2, chunk_size=chunk, conv_size=2,
    ))


def test_sparse_attention_reads_only_the_kept_slots_and_trains_the_scores():
    # within the first chunk no slot is written, so y depends on the slots only through the reads
    torch.manual_seed(0)
    block = SparseStateAttention(16, num_slots=12, top_k=2, num_heads=2, chunk_size=32).double()
    x = torch.randn(1, 5, 16, dtype=F64)
    y, _ = block(x)
    y.square().sum().backward()
    with torch.no_grad():
        q = block.q(x).view(1, 5, 2, 8).transpose(1, 2)
        keys = block.k(block.slots).view(12, 2, 8).transpose(0, 1)
        chosen = (q @ keys.transpose(-1, -2)).topk(2, dim=-1).indices.unique()
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[chosen] = False
    assert untouched.any()
    assert (block.slots.grad[untouched] == 0).all(), "a slot outside every token's top-k influenced the output"
    assert (block.slots.grad[chosen].abs().sum(-1) > 0).all()
    assert block.q.weight.grad.abs().sum() > 0 and block.k.weight.grad.abs().sum() > 0


def test_sparse_attention_cost_counts_scores_over_slots_and_reads_over_k():
    d = 64
    base = SparseStateAttention(d, num_slots=32, top_k=4, device="meta")
    more_k = SparseStateAttention(d, num_slots=32, top_k=5, device="meta")
    more_s = SparseStateAttention(d, num_slots=33, top_k=4, device="meta")
    n = 4096
    # one more kept slot costs one more d-wide read; one more slot costs one more score and write per token
    assert more_k.flops_per_token(n) - base.flops_per_token(n) == pytest.approx(2 * d + 3 * base.num_heads)
    per_slot = more_s.flops_per_token(n) - base.flops_per_token(n)
    assert 6 * d <= per_slot <= 6 * d + 2 * d * d / 64 + 4 * d / 64 + 4 * base.num_heads


# NTM memory


def test_ntm_shift_moves_the_focus_and_sharpening_concentrates_it():
    b, N, M = 2, 6, 3
    memory = torch.randn(b, N, M)
    previous = F.one_hot(torch.tensor([[1], [4]]), N).float()  # (b, 1, N)
    key, beta = torch.randn(b, 1, M), torch.zeros(b, 1)
    shift = torch.tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)
    w = address(memory, key, beta, torch.zeros(b, 1), shift, torch.ones(b, 1), previous)
    torch.testing.assert_close(w, previous.roll(1, dims=-1))  # +1 shift, circular: 4 → 5 and 1 → 2
    back = torch.tensor([1.0, 0.0, 0.0]).expand(b, 1, 3)
    torch.testing.assert_close(address(memory, key, beta, torch.zeros(b, 1), back, torch.ones(b, 1), previous),
                               previous.roll(-1, dims=-1))
    blurry = torch.tensor([0.2, 0.6, 0.2]).expand(b, 1, 3)
    soft = address(memory, key, beta, torch.zeros(b, 1), blurry, torch.ones(b, 1), previous)
    sharp = address(memory, key, beta, torch.zeros(b, 1), blurry, torch.full((b, 1), 20.0), previous)
    assert (sharp.amax(-1) > soft.amax(-1)).all() and (sharp.amax(-1) > 0.99).all()
    torch.testing.assert_close(sharp.sum(-1), torch.ones(b, 1))


def test_ntm_content_addressing_finds_the_matching_row():
    memory = torch.eye(5).unsqueeze(0) * 3
    w = content_weights(memory, torch.tensor([[[0.0, 0.0, 2.0, 0.0, 0.0]]]), torch.tensor([[50.0]]))
    assert w.argmax().item() == 2 and w.max() > 0.99


def test_ntm_write_erases_and_adds_where_the_weighting_points():
    memory = torch.ones(1, 4, 2)
    weights = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    new = write(memory, weights, erase=torch.ones(1, 1, 2), add=torch.tensor([[[5.0, 6.0]]]))
    torch.testing.assert_close(new[0, 1], torch.tensor([5.0, 6.0]))
    torch.testing.assert_close(new[0, [0, 2, 3]], torch.ones(3, 2))
    torch.testing.assert_close(read(new, weights), torch.tensor([[[5.0, 6.0]]]))


def test_ntm_write_path_receives_gradients():
    torch.manual_seed(0)
    block = NTMMemory(8, memory_slots=6, memory_width=4).double()
    y, _ = block(torch.randn(2, 5, 8, dtype=F64))
    y.square().mean().backward()  # the outputs only: whatever reaches the write head came through memory
    r = block.read_heads
    write_rows = block.heads.weight.grad[r * sum(block.read_sizes):]
    key, beta, gate, shift, gamma, erase, add = write_rows.split(block.write_sizes)
    for name, g in {"key": key, "beta": beta, "gate": gate, "shift": shift, "gamma": gamma,
                    "erase": erase, "add": add}.items():
        assert g.abs().sum() > 0, f"write head `{name}` got no gradient"
    assert block.initial_memory.grad.abs().sum() > 0


def test_ntm_memory_is_per_sequence_and_per_call():
    torch.manual_seed(0)
    block = NTMMemory(8, memory_slots=5, memory_width=4).double()
    x = torch.randn(3, 6, 8, dtype=F64)
    first, state = block(x)
    assert state["memory"].shape == (3, 5, 4)
    assert not torch.equal(state["memory"][0], state["memory"][1])
    again, _ = block(x)  # a new call starts from the initial memory again
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(block.init_state(2)["memory"][1], block.initial_memory)


def test_ntm_standalone_with_fixed_memory_keeps_the_contract():
    torch.manual_seed(0)
    run_contract(NTMMemory(12, memory_slots=4, memory_width=3, read_heads=2, write_heads=2,
                           controller_size=10, memory_init="fixed"))


# all blocks: parameter counts, costs, the hybrid card


@pytest.mark.parametrize(
    "kind,params",
    [
        ("linear_attention", {"decay": "input", "num_heads": 8}),
        ("linear_attention", {"decay": "fixed", "normalize": False}),
        ("sparse_state_attention", {"num_slots": 16, "top_k": 2, "conv_size": 3}),
        ("ssm", {"d_state": 8, "expand": 3, "dt_rank": 5, "conv_size": 3}),
        ("ntm", {"memory_slots": 10, "memory_width": 7, "read_heads": 3, "write_heads": 2, "controller_size": 20}),
        ("ntm", {"memory_init": "fixed"}),
    ],
)
def test_param_count_formula(kind, params):
    m = pulse.build_mixer(kind, 48, device="meta", **params)
    assert m.param_count() == sum(p.numel() for p in m.parameters())


def test_summarize_reports_state_and_flops_of_every_zoo_block():
    recipe = pulse.recipe_from_dict({"model": {"from": "hybrid-zoo"}})
    model = pulse.build_model(recipe, device="meta")
    rows = {b.type: b for b in summarize(model, seq_len=512, table=False).blocks}
    for name in ("SelectiveSSM", "LinearAttention", "SparseStateAttention", "CausalSelfAttention"):
        assert rows[name].state_bytes > 0 and rows[name].flops_per_token > 0
    ntm = pulse.build_model(pulse.recipe_from_dict({"model": {"from": "ntm-small"}}), device="meta")
    row = next(b for b in summarize(ntm, seq_len=64, table=False).blocks if b.type == "NTMMemory")
    assert row.state_bytes == 4 * ntm.layers[0].mixer.state_numel(64) and row.flops_per_token > 0


def test_recurrent_blocks_have_constant_state_and_linear_cost():
    for kind in ("linear_attention", "sparse_state_attention", "ssm", "ntm"):
        m = pulse.build_mixer(kind, 64, device="meta")
        assert m.state_numel(1024) == m.state_numel(16_384), kind
        assert m.flops_per_token(16_384) == pytest.approx(m.flops_per_token(4096)), kind


def test_hybrid_zoo_card_mixes_kinds_and_steps_like_its_forward():
    recipe = pulse.recipe_from_dict({"model": {"from": "hybrid-zoo", "dim": 32, "vocab_size": 50}})
    assert recipe.model.mixer_names() == ["ssm", "linear", "sparse", "ssm", "linear", "attn"]
    torch.manual_seed(0)
    model = pulse.build_model(recipe, dtype=F64).eval()
    ids = torch.randint(0, 50, (2, 21))
    logits, _ = model(ids)
    state = model.init_state(2)
    stepped = []
    for i in range(ids.shape[1]):
        out, state = model.step(ids[:, i], state)
        stepped.append(out)
    contract.assert_close(torch.stack(stepped, dim=1), logits, "hybrid-zoo step vs forward")


@pytest.mark.parametrize("heads", [(1, 1), (2, 3)])
def test_ntm_fused_loop_matches_the_reference_step(heads):
    torch.manual_seed(0)
    r, w = heads
    block = NTMMemory(10, memory_slots=7, memory_width=5, read_heads=r, write_heads=w, controller_size=12).double()
    x = torch.randn(2, 9, 10, dtype=F64, requires_grad=True)
    fast, fast_state = block(x)
    state, ys = block.init_state(2, dtype=F64), []
    for x_t in x.unbind(1):
        y, state = block.step_reference(x_t, state)
        ys.append(y)
    names = sorted(state)
    assert_grads_close([fast] + [fast_state[k] for k in names], [torch.stack(ys, 1)] + [state[k] for k in names],
                       [x, *block.parameters()], f"ntm fused loop, heads r={r} w={w}")


@pytest.mark.parametrize("width, bias", [(2, True), (4, False), (4, True)])
def test_causal_conv_equals_conv1d_in_values_and_gradients(width, bias):
    # the shifted-product form (its own backward when a gradient is needed) against torch's conv1d
    from pulse.ops.causal_conv import causal_depthwise_conv

    torch.manual_seed(0)
    b, t, c = 2, 9, 5
    x, w, s = torch.randn(b, t, c, dtype=F64), torch.randn(c, width, dtype=F64), torch.randn(b, width - 1, c, dtype=F64)
    bb = torch.randn(c, dtype=F64) if bias else None
    inputs = [z.requires_grad_(True) for z in (x, w, s, *([bb] if bias else []))]

    def ours(x, w, s, *rest):
        y, state = causal_depthwise_conv(x, w, rest[0] if rest else None, s)
        return y, state

    def theirs(x, w, s, *rest):
        xp = torch.cat((s, x), dim=1)
        y = F.conv1d(xp.transpose(1, 2), w.unsqueeze(1), rest[0] if rest else None, groups=c).transpose(1, 2)
        return y, xp[:, t:]

    assert_grads_close(ours(*inputs), theirs(*inputs), inputs, f"causal conv w={width} bias={bias}")
    assert torch.autograd.gradcheck(ours, inputs)
    with torch.no_grad():  # the plain forward (no autograd function) gives the same values and state
        y, state = ours(*inputs)
        torch.testing.assert_close((y, state), theirs(*inputs))
        assert state.data_ptr() != x.data_ptr() and state.shape == (b, width - 1, c)
