"""pulse_routed's router: it learns through the gates g of the chosen memories, which gate decides how.

gate "softmax" (Switch-style, the default): g_m = p_m, the router's probability itself, so the output moves with
the router's logits at every top_k. gate "renormalized" (MoM's, and every checkpoint stored before the field
existed): g_m = p_m / Σ_{chosen} p, which is identically 1 at top_k = 1 — the router then gets no gradient at all
(the top-k choice itself has none), and at top_k ≥ 2 only through the split between the chosen memories.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pulse
from pulse.api.source import _from_stored
from pulse.specs.load import load_recipe

F64 = torch.float64


def _gradient_rms(gate: str, top_k: int, seed: int = 0) -> tuple[float, float]:
    """Root-mean-square gradient of a squared-output loss on the router's weights (the last M rows of in_proj)
    and on the other rows of in_proj, in float64."""
    torch.manual_seed(seed)
    m = pulse.build_mixer("pulse_routed", 16, num_memories=3, top_k=top_k, gate=gate, head_dim=8, dtype=F64)
    m(torch.randn(2, 12, 16, dtype=F64))[0].square().sum().backward()
    grad = m.in_proj.weight.grad
    rms = lambda g: g.square().mean().sqrt().item()  # noqa: E731
    return rms(grad[-m.num_memories:]), rms(grad[:-m.num_memories])


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_softmax_gate_gives_the_router_a_gradient_like_the_other_weights(top_k):
    for seed in range(3):
        router, other = _gradient_rms("softmax", top_k, seed)
        assert router > 0.05 * other, f"seed {seed}: router {router:.3g} vs other in_proj rows {other:.3g}"


def test_the_renormalized_gate_gives_no_router_gradient_at_top_1_and_one_at_top_2():
    """At top_k = 1 the renormalized gate is p / p ≡ 1: what reaches the router is rounding only."""
    router, other = _gradient_rms("renormalized", 1)
    assert router < 1e-12 * other
    router, other = _gradient_rms("renormalized", 2)
    assert router > 0.05 * other


def test_the_gates_are_the_probabilities_or_their_renormalized_share():
    logits = torch.randn(2, 5, 4, dtype=F64)
    p = logits.softmax(-1)
    for gate, top_k in (("softmax", 1), ("softmax", 2), ("renormalized", 1), ("renormalized", 2)):
        m = pulse.build_mixer("pulse_routed", 16, num_memories=4, top_k=top_k, gate=gate, head_dim=8)
        chosen, gates = m.route(logits)
        assert (chosen.sum(-1) == top_k).all() and torch.equal(gates != 0, chosen)
        expected = p * chosen
        if gate == "renormalized":
            expected = expected / expected.sum(-1, keepdim=True)
        torch.testing.assert_close(gates, expected, rtol=0, atol=1e-15)


def test_routing_runs_in_the_input_precision():
    """float64 logits are routed in float64 (the gates' gradient passes gradcheck); half precision in float32."""
    m = pulse.build_mixer("pulse_routed", 16, num_memories=4, top_k=2, head_dim=8)
    logits = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    _, gates = m.route(logits)
    assert gates.dtype == F64
    torch.testing.assert_close(gates[gates != 0], logits.softmax(-1)[gates != 0], rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(lambda z: m.route(z)[1], (logits,))
    half = logits.detach().to(torch.bfloat16)
    _, gates = m.route(half)
    assert gates.dtype == torch.bfloat16
    torch.testing.assert_close(gates, m.route(half.float())[1].to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize("gate", ["softmax", "renormalized"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_step_equals_forward(gate, top_k):
    torch.manual_seed(1)
    m = pulse.build_mixer("pulse_routed", 16, num_memories=3, top_k=top_k, gate=gate, head_dim=8, chunk_size=4,
                          dtype=F64)
    x = torch.randn(2, 10, 16, dtype=F64)
    out, final = m(x, doc_starts=[[3], [0, 7]])
    state, steps = m.init_state(2, dtype=F64), []
    for i in range(x.shape[1]):
        y, state = m.step(x[:, i], state, doc_starts=torch.tensor([i in (3,), i in (0, 7)]))
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["kv"], final["kv"], rtol=1e-10, atol=1e-10)


def test_a_routed_recipe_stored_before_the_gate_existed_opens_renormalized(tmp_path):
    """New recipes default to gate "softmax" and store it; a stored pulse_routed table without `gate` was trained
    with the renormalized gates, and opens that way, so its checkpoint computes exactly as before."""
    card = Path(__file__).resolve().parent.parent / "zoo/pulse-routed-small.toml"
    stored = load_recipe(card).to_dict()
    assert stored["model"]["mixers"]["routed"]["gate"] == "softmax"
    opened = _from_stored(stored, tmp_path, None, "checkpoint", (), None, False, None, [])
    assert opened.recipe.model.mixers["routed"].gate == "softmax"
    del stored["model"]["mixers"]["routed"]["gate"]
    old = _from_stored(stored, tmp_path, None, "checkpoint", (), None, False, None, [])
    assert old.recipe.model.mixers["routed"].gate == "renormalized"
    layer = pulse.build_model(old.recipe, device="meta").layers[0].mixer
    assert layer.gate == "renormalized"


def test_an_export_stored_before_the_gate_existed_loads_renormalized_in_transformers():
    """A Hugging Face export's config.json holds the recipe as stored: Transformers' class builds the model through
    the same rule (pulse.specs.load.as_stored), so an old export of a routed model computes as before there too."""
    pytest.importorskip("transformers", reason="the hf extra (pip install 'pulse[hf]') is not installed")
    from types import SimpleNamespace

    from pulse.hf.modeling import _recipe

    card = Path(__file__).resolve().parent.parent / "zoo/pulse-routed-small.toml"
    stored = load_recipe(card).to_dict()
    assert _recipe(SimpleNamespace(recipe=stored)).model.mixers["routed"].gate == "softmax"
    del stored["model"]["mixers"]["routed"]["gate"]
    assert _recipe(SimpleNamespace(recipe=stored)).model.mixers["routed"].gate == "renormalized"
