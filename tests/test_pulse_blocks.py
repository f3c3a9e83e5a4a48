"""The PULSE state blocks beyond the registry properties: fast paths against plain references,
routing, gates, parameter formulas, pruning and allocation, the adaptive budget, the hierarchy,
and swapping parts from a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pulse
from pulse import contract
from pulse.blocks.pulse.reference import reference_forward
from pulse.ops.mingru_scan import mingru_coefficients, mingru_scan, mingru_scan_reference
from pulse.summarize import summarize

ROOT = Path(__file__).resolve().parent.parent
F64 = torch.float64
GATES = ("gru", "lstm", "mingru")


def layer(**kw) -> pulse.PulseLayer:
    torch.manual_seed(kw.pop("seed", 0))
    args = dict(num_slots=5, chunk_size=4, num_heads=2, dtype=F64)
    variant = kw.pop("variant", "static")
    if variant == "managed":
        args["manager"] = pulse.StateManager(16, max_slots=6, init_slots=5, dtype=F64)
        args["num_slots"] = 6
    elif variant == "adaptive":
        args["allocator"] = pulse.AdaptiveStateAllocator(16, min_slots=2, max_slots=6, features=4, dtype=F64)
        args["num_slots"] = 6
    return pulse.PulseLayer(16, **{**args, **kw})


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())



@settings(deadline=None)
@given(n=st.integers(1, 70), block=st.sampled_from([None, 2, 3, 8]), seed=st.integers(0, 2**16),
       method=st.sampled_from(["loop", "log"]))
def test_mingru_scan_equals_sequential_values_and_gradients(n, block, seed, method):
    """Both forms: the √n block scan (the CPU's) and the log-depth one (every other device's), run here."""
    gen = torch.Generator().manual_seed(seed)
    g = (torch.randn(2, n, 3, 4, generator=gen, dtype=F64) * 3).requires_grad_()
    cand = torch.randn(2, n, 3, 4, generator=gen, dtype=F64).requires_grad_()
    h0 = torch.randn(2, 3, 4, generator=gen, dtype=F64).requires_grad_()
    weights = torch.randn(2, n, 3, 4, generator=gen, dtype=F64)

    def run(scan):
        a, b = mingru_coefficients(g, cand)
        out = scan(a, b, h0) if scan is mingru_scan_reference else scan(a, b, h0, block=block, method=method)
        return out, torch.autograd.grad((out * weights).sum(), (g, cand, h0))

    fast, fast_grads = run(mingru_scan)
    slow, slow_grads = run(mingru_scan_reference)
    contract.assert_close(fast, slow, "scan values")
    for a, b, name in zip(fast_grads, slow_grads, ("gate", "candidate", "h0")):
        contract.assert_close(a, b, f"scan gradient wrt {name}")


@pytest.mark.parametrize("method", ["loop", "log"])
def test_mingru_scan_is_safe_with_saturated_gates(method):
    g = torch.tensor([-60.0, 60.0, 0.0, 80.0, -80.0]).repeat(40).view(1, 200, 1).requires_grad_()
    cand = torch.linspace(-3, 3, 200).view(1, 200, 1)
    a, b = mingru_coefficients(g, cand)
    fast = mingru_scan(a, b, torch.ones(1, 1), method=method)
    fast.sum().backward()
    assert torch.isfinite(fast).all() and torch.isfinite(g.grad).all()
    contract.assert_close(fast, mingru_scan_reference(a, b, torch.ones(1, 1)), "saturated scan")



CASES = [(gate, local, "static") for gate in GATES for local in ("attention", "conv")] + [
    (gate, "attention", variant) for gate in GATES for variant in ("managed", "adaptive")
]


@pytest.mark.parametrize(("gate", "local", "variant"), CASES)
@pytest.mark.parametrize("length", [1, 7, 14])
def test_chunked_forward_equals_per_token_reference(gate, local, variant, length):
    m = layer(gate=gate, local=local, variant=variant)
    x = torch.randn(2, length, 16, dtype=F64, requires_grad=True)
    weights = torch.randn(2, length, 16, dtype=F64)
    params = [p for p in m.parameters() if p.requires_grad]

    fast = m(x)[0]
    slow = reference_forward(m, x)
    contract.assert_close(fast, slow, "chunked forward vs reference")
    fast_grads = torch.autograd.grad((fast * weights).sum(), [x, *params], allow_unused=True)
    slow_grads = torch.autograd.grad((slow * weights).sum(), [x, *params], allow_unused=True)
    names = ["x", *(n for n, p in m.named_parameters() if p.requires_grad)]
    for name, a, b in zip(names, fast_grads, slow_grads):
        if a is None and b is None:
            continue
        # a parameter one path never touches must get a zero gradient from the other
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        contract.assert_close(a, b, f"gradient wrt {name}")


@pytest.mark.parametrize("gate", GATES)
def test_chunk_size_one_is_the_per_token_recurrence(gate):
    m = layer(gate=gate, chunk_size=1)
    x = torch.randn(2, 6, 16, dtype=F64)
    contract.assert_close(m(x)[0], reference_forward(m, x), "chunk_size=1")
    contract.check_step(m, x)


@pytest.mark.parametrize("gate", ["gru", "lstm"])
def test_many_chunks_use_the_folded_weights_and_still_agree(gate):
    # enough chunks that the loop folds the router output into the gate projection
    m = layer(gate=gate)
    x = torch.randn(2, 47, 16, dtype=F64)
    contract.assert_close(m(x)[0], reference_forward(m, x), "folded loop")
    contract.check_split(m, x, 23)


def test_partial_chunk_stays_in_the_state():
    m = layer()
    _, state = m(torch.randn(1, 6, 16, dtype=F64))
    assert state["buffer"]["k"].shape == (1, 2, 16)
    _, state = m(torch.randn(1, 2, 16, dtype=F64), state)
    assert state["buffer"] == {}
    assert m.state_numel(6) == sum(t.numel() for t in contract.tensors(m(torch.randn(1, 6, 16, dtype=F64))[1]))


@pytest.mark.parametrize("kind", ["pulse", "pulse_managed", "pulse_adaptive", "hierarchical"])
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("local", ["attention", "conv"])
def test_contract_holds_for_every_gate_and_local_path(kind, gate, local):
    torch.manual_seed(0)
    m = pulse.build_mixer(kind, 16, chunk_size=3, num_heads=2, gate=gate, local=local, dtype=F64)
    x = torch.randn(2, 11, 16, dtype=F64)
    contract.check_causal(m, x, 4)
    contract.check_split(m, x, 5)
    contract.check_step(m, x)
    contract.check_batch(m, x, 1)
    contract.check_gradient(m, x)
    for n in (1, 4, 11):
        state = m(x[:, :n])[1]
        assert m.state_numel(n) * 2 == sum(t.numel() for t in contract.tensors(state)), "state_numel vs the state"



def test_routing_weights_are_a_distribution_and_match_the_fast_path():
    torch.manual_seed(0)
    router = pulse.TokenToStateRouter(16, token_dim=24, num_heads=4, dtype=F64)
    slots, tokens = torch.randn(3, 5, 16, dtype=F64), torch.randn(3, 9, 24, dtype=F64)
    update, weights = router(slots, tokens, return_weights=True)
    assert update.shape == (3, 5, 16) and weights.shape == (3, 5, 9)
    assert (weights >= 0).all()
    contract.assert_close(weights.sum(-1), torch.ones(3, 5, dtype=F64), "routing weights sum to one")
    contract.assert_close(router(slots, tokens), update, "SDPA path vs explicit weights")
    # routing depends on slot content: other slots, other weights
    assert not torch.allclose(router(slots * 2, tokens, return_weights=True)[1], weights)
    with pytest.raises(pulse.PulseError, match="expects slots"):
        router(slots, torch.randn(3, 9, 16, dtype=F64))


def test_gru_gate_follows_its_equations():
    torch.manual_seed(0)
    prop = pulse.StatePropagator(8, gate="gru", communication=False, dtype=F64)
    h, x = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    wx, bx, wh, whh = prop.w_x.weight, prop.w_x.bias, prop.w_h.weight, prop.w_hh.weight
    r = torch.sigmoid(x @ wx[:8].T + bx[:8] + h @ wh[:8].T)
    z = torch.sigmoid(x @ wx[8:16].T + bx[8:16] + h @ wh[8:].T)
    cand = torch.tanh(x @ wx[16:].T + bx[16:] + (r * h) @ whh.T)
    contract.assert_close(prop(h, x), (1 - z) * h + z * cand, "gru equations")


def test_lstm_carries_a_real_cell_state():
    torch.manual_seed(0)
    prop = pulse.StatePropagator(8, gate="lstm", num_heads=2, dtype=F64)
    h, x = torch.randn(2, 3, 8, dtype=F64), torch.randn(2, 3, 8, dtype=F64)
    c0 = prop.init_cell(h)
    h1, c1 = prop((h, c0), x)
    h2a, c2a = prop((h1, c1), x)
    h2b, c2b = prop((h1, torch.zeros_like(c1)), x)
    assert not torch.allclose(c1, c0) and not torch.allclose(c2a, c2b), "the cell must carry information"
    assert not torch.allclose(h2a, h2b)


def test_mingru_gate_is_linear_in_the_state():
    torch.manual_seed(0)
    prop = pulse.StatePropagator(8, gate="mingru", communication=False, dtype=F64)
    x = torch.randn(2, 8, dtype=F64)
    h1, h2 = torch.randn(2, 8, dtype=F64), torch.randn(2, 8, dtype=F64)
    zero = prop(torch.zeros_like(h1), x)
    contract.assert_close(prop(h1 + h2, x) - zero, (prop(h1, x) - zero) + (prop(h2, x) - zero), "linear in h")


@pytest.mark.parametrize("gate", GATES)
def test_propagator_accepts_single_and_slotted_states(gate):
    prop = pulse.StatePropagator(8, gate=gate, num_heads=2, input_dim=12)
    for shape in [(4, 8), (4, 3, 8)]:
        h = torch.randn(*shape)
        state = (h, prop.init_cell(h)) if gate == "lstm" else h
        out = prop(state, torch.randn(*shape[:-1], 12))
        out_h = out[0] if gate == "lstm" else out
        assert out_h.shape == shape



def test_param_count_formulas_match_numel():
    blocks = [pulse.TokenToStateRouter(16, token_dim=24), pulse.StateManager(16, max_slots=7),
              pulse.AdaptiveStateAllocator(24, min_slots=2, max_slots=7)]
    blocks += [pulse.StatePropagator(16, gate=g, communication=c, input_dim=i)
               for g in GATES for c in (True, False) for i in (None, 24)]
    blocks += [pulse.build_mixer(kind, 24, gate=g, local=loc, slot_dim=16)
               for kind in ("pulse", "pulse_managed", "pulse_adaptive", "hierarchical")
               for g in GATES for loc in ("attention", "conv")]
    blocks += [pulse.build_mixer("pulse", 24, communication=False)]
    for block in blocks:
        assert block.param_count() == numel(block), type(block).__name__



def managed_model(**mixer):
    recipe = pulse.recipe_from_dict({"model": {
        "vocab_size": 32, "dim": 32, "depth": 2, "layout": ["pulse"],
        "mixers": {"pulse": {"kind": "pulse_managed", "max_slots": 8, "chunk_size": 4, **mixer}},
    }})
    torch.manual_seed(0)
    return pulse.build_model(recipe)


def test_importance_scores_receive_gradients():
    model = managed_model()
    logits, _ = model(torch.randint(0, 32, (2, 9)))
    logits.square().mean().backward()
    for layer in model.layers:
        grad = layer.mixer.manager.importance.grad
        assert grad is not None and grad.abs().sum() > 0


def test_pruning_reduces_state_bytes_and_compute_and_allocation_reinitializes():
    model = managed_model()
    before = summarize(model, seq_len=64, table=False)
    for layer in model.layers:
        manager = layer.mixer.manager
        with torch.no_grad():
            manager.importance[[1, 3, 4]] = -5.0
        assert manager.prune(0.5) == 3
        assert manager.num_active == 5 and manager.active_slots == [0, 2, 5, 6, 7]
    after = summarize(model, seq_len=64, table=False)
    assert after.state_bytes < before.state_bytes
    assert after.flops_per_token < before.flops_per_token
    ids = torch.randint(0, 32, (2, 9))
    logits, state = model(ids)
    assert state["layers"][0]["slots"]["h"].shape[1] == 5, "inactive slots are not carried"

    manager = model.layers[0].mixer.manager
    old = manager.slots.detach().clone()
    assert manager.allocate(2) == [1, 3]
    assert not torch.allclose(manager.slots[[1, 3]], old[[1, 3]]), "allocated slots are re-initialized"
    assert torch.equal(manager.slots[[0, 2]], old[[0, 2]])
    assert torch.allclose(torch.sigmoid(manager.importance[[1, 3]]), torch.sigmoid(torch.tensor(2.0)))
    assert summarize(model, seq_len=64, table=False).state_bytes > after.state_bytes
    with pytest.raises(pulse.PulseError, match="start a new sequence"):
        model(ids, state)
    with pytest.raises(pulse.PulseError, match="cannot allocate"):
        manager.allocate(2)


def test_prune_never_removes_the_last_slot_and_survives_a_state_dict_round_trip():
    manager = pulse.StateManager(8, max_slots=4)
    with torch.no_grad():
        manager.importance.copy_(torch.tensor([-4.0, -1.0, -6.0, -9.0]))
    manager.prune(0.9)
    assert manager.active_slots == [1]
    fresh = pulse.StateManager(8, max_slots=4)
    fresh.load_state_dict(manager.state_dict())
    assert fresh.active_slots == [1] and fresh.num_active == 1



def test_allocator_budget_is_causal_and_bounded():
    torch.manual_seed(0)
    alloc = pulse.AdaptiveStateAllocator(16, min_slots=2, max_slots=6, dtype=F64)
    x = torch.randn(2, 20, 16, dtype=F64)
    budget, _ = alloc(x, chunk_size=4)
    assert budget.shape == (2, 5) and (budget >= 2).all() and (budget <= 6).all()
    x2 = x.clone()
    x2[:, 8:] = torch.randn(2, 12, 16, dtype=F64)
    budget2, _ = alloc(x2, chunk_size=4)
    contract.assert_close(budget2[:, :3], budget[:, :3], "chunks 0..2 only see tokens before 8")
    masks, _ = alloc.masks(budget)
    assert (masks[..., :2] == 1).all() and masks.shape == (2, 5, 6)


def test_allocator_parameters_get_gradients_inside_the_layer():
    m = pulse.build_mixer("pulse_adaptive", 16, chunk_size=4, num_heads=2, min_slots=2, max_slots=6, dtype=F64)
    y, _ = m(torch.randn(2, 13, 16, dtype=F64))
    y.square().mean().backward()
    for name, p in m.allocator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_simple_and_complex_inputs_get_different_budgets_after_training():
    torch.manual_seed(0)
    alloc = pulse.AdaptiveStateAllocator(16, min_slots=2, max_slots=10)
    simple = torch.randn(8, 1, 16).expand(8, 32, 16)  # one token repeated
    complex_ = torch.randn(8, 32, 16)  # fresh content every token

    def gap() -> float:
        with torch.no_grad():
            # chunk 0 has seen nothing yet; compare the chunks after it
            return float(alloc(complex_, chunk_size=4)[0][:, 1:].mean() - alloc(simple, chunk_size=4)[0][:, 1:].mean())

    untrained = gap()
    opt = torch.optim.Adam(alloc.parameters(), lr=0.05)
    for _ in range(40):
        # toy objective: capacity is cheap for hard content and wasted on easy content
        loss = alloc(simple, chunk_size=4)[0].mean() - alloc(complex_, chunk_size=4)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = gap()
    assert trained > 4.0 > abs(untrained), (untrained, trained)



def test_hierarchy_levels_tick_every_1_r_and_r2_chunks():
    torch.manual_seed(0)
    m = pulse.HierarchicalStateManager(16, chunk_size=2, ratio=2, num_heads=2, dtype=F64)
    x = torch.randn(1, 2 * 9, 16, dtype=F64)
    state = m.init_state(1)
    changed = []
    for g in range(9):
        before = [h.clone() for h in state["slots"]["levels"]]
        _, state = m(x[:, 2 * g : 2 * g + 2], state)
        changed.append(tuple(not torch.equal(a, b) for a, b in zip(before, state["slots"]["levels"])))
    assert [c[0] for c in changed] == [True] * 9
    assert [c[1] for c in changed] == [g % 2 == 0 for g in range(9)]
    assert [c[2] for c in changed] == [g % 4 == 0 for g in range(9)]


def test_tokens_read_all_three_levels():
    m = pulse.HierarchicalStateManager(16, chunk_size=4, num_heads=2, dtype=F64)
    y, _ = m(torch.randn(2, 3, 16, dtype=F64))
    grads = torch.autograd.grad(y.square().sum(), list(m.slot_init))
    assert all(g.abs().sum() > 0 for g in grads)



@pytest.mark.parametrize("gate", GATES)
def test_recipe_override_swaps_the_gate(gate):
    recipe = pulse.load_recipe(ROOT / "recipes" / "hybrid.toml", overrides=[f"model.mixers.pulse.gate={gate}"])
    model = pulse.build_model(recipe, device="meta")
    mixers = [layer.mixer for layer in model.layers]
    assert [type(m).__name__ for m in mixers] == ["PulseLayer", "PulseLayer", "CausalSelfAttention", "PulseLayer"]
    assert {m.propagator.gate for m in mixers if isinstance(m, pulse.PulseLayer)} == {gate}
    assert mixers[2].rotary is not None


def test_hybrid_recipe_summarizes_at_8k():
    model = pulse.build_model(pulse.load_recipe(ROOT / "recipes" / "hybrid.toml"), device="meta")
    summary = summarize(model, seq_len=8192, table=False)
    pulse_rows = [b for b in summary.blocks if b.type == "PulseLayer"]
    attention_rows = [b for b in summary.blocks if b.type == "CausalSelfAttention"]
    assert len(pulse_rows) == 3 and len(attention_rows) == 1
    assert all(b.state_bytes < attention_rows[0].state_bytes / 100 for b in pulse_rows)


def test_bad_pulse_settings_are_recipe_errors():
    with pytest.raises(pulse.PulseError, match="num_heads"):
        pulse.build_mixer("pulse", 24, num_heads=5)
    with pytest.raises(pulse.PulseError, match="gate"):
        pulse.build_mixer("pulse", 16, gate="rnn")
    with pytest.raises(pulse.PulseError, match="min_slots"):
        pulse.build_mixer("pulse_adaptive", 16, min_slots=9, max_slots=4)
    with pytest.raises(pulse.PulseError, match="init_slots"):
        pulse.build_mixer("pulse_managed", 16, max_slots=4, init_slots=5)


def test_hierarchy_forms_fused_weights_only_for_levels_it_writes(monkeypatch):
    # a generated token completes no chunk: forming the three levels' fused weights for it cost ~8x per token
    from pulse.blocks.pulse import hierarchical

    calls = []
    real = hierarchical.fuse
    monkeypatch.setattr(hierarchical, "fuse", lambda *a: calls.append(a[2]) or real(*a))
    block = pulse.build_mixer("hierarchical", 16, chunk_size=4, num_heads=2)
    _, state = block(torch.randn(1, 1, 16))
    block.step(torch.randn(1, 16), state)  # two tokens of a four-token chunk: nothing to write
    assert calls == []
    block(torch.randn(1, 16, 16))  # chunks 0-3: the token level 4 writes, the chunk level 2, the global level 1
    assert calls == [4, 2, 1]
