"""Models: PulseConfig ↔ TOML equivalence, SimplePulse, SequencePulse (modes, padding, streaming),
and the model kinds recipes name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pulse
from helpers import run_cli
from pulse.contract import assert_close

ROOT = Path(__file__).resolve().parent.parent
SEQ_LAYOUTS = {"transformer": ("attention",), "pure-pulse": ("pulse",), "hybrid": ("pulse", "attention")}


def shapes(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


HYBRID_TOML = """
[model]
kind = "lm"
vocab_size = 300
dim = 32
depth = 3
layout = ["pulse", "attention"]
tie_embeddings = false

[model.mixers.pulse]
kind = "pulse"
num_slots = 8
chunk_size = 16
num_heads = 2
gate = "lstm"

[model.mixers.attention]
kind = "attention"
num_heads = 2

[model.mlp]
kind = "gelu"

[model.norm]
kind = "layernorm"

[model.positions]
kind = "learned"
max_seq_len = 128
"""

HYBRID_CONFIG = dict(
    vocab_size=300, hidden_size=32, num_layers=3, layout=["pulse", "attention"], num_states=8, chunk_size=16,
    num_heads=2, gate_type="lstm", mlp="gelu", norm="layernorm", tie_word_embeddings=False,
    position_embedding="learned", max_position_embeddings=128,
)


def test_pulse_config_and_toml_build_the_same_model(tmp_path):
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID_TOML)
    config = pulse.PulseConfig(**HYBRID_CONFIG)
    from_config = pulse.PulseForCausalLM(config, device="meta")
    from_toml = pulse.build_model(pulse.load_recipe(path), device="meta")
    assert shapes(from_config.model) == shapes(from_toml) and len(shapes(from_toml)) > 10
    assert config.to_recipe().hash() == pulse.load_recipe(path).hash()
    again = pulse.PulseForCausalLM.from_recipe(path, device="meta")
    assert shapes(again) == shapes(from_config)


def test_pulse_config_transformer_matches_the_zoo_card():
    card = pulse.recipe_from_dict({"model": {"from": "transformer-small"}})
    config = pulse.PulseConfig(vocab_size=256, hidden_size=256, num_layers=4, layout=["attention"], num_heads=4)
    model = pulse.PulseForCausalLM(config, device="meta")
    assert shapes(model.model) == shapes(pulse.build_model(card, device="meta"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hidden_sise=64), "unknown key `hidden_sise` (did you mean `hidden_size`?)"),
        (dict(layout=["attention"], num_states=8), "num_states is used by none of the layout's mixers (attention)"),
        (dict(layout=["atention"]), "unknown mixer kind `atention` (did you mean `attention`?)"),
        (
            dict(layout=["attention"], hidden_size=32, num_heads=3),
            "model.mixers.attention: num_heads (3) must divide dim (32)",
        ),
        (dict(layout=["attention"], mixer_options={"pulse": {}}), "mixer_options names pulse"),
        (dict(layout=["attention"], mlp="swiglo"), "unknown mlp kind `swiglo`"),
    ],
)
def test_pulse_config_mistakes_are_pulse_errors(kwargs, message):
    with pytest.raises(pulse.PulseError) as info:
        pulse.PulseForCausalLM(pulse.PulseConfig(**kwargs), device="meta")
    assert message in str(info.value)


def test_pulse_for_causal_lm_refuses_other_model_kinds():
    recipe = pulse.recipe_from_dict({"model": {"kind": "simple_pulse", "input_dim": 4, "output_dim": 2}})
    with pytest.raises(pulse.PulseError, match="needs a language-model recipe"):
        pulse.PulseForCausalLM(recipe)


def test_save_pretrained_from_pretrained_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = pulse.PulseForCausalLM(pulse.PulseConfig(**HYBRID_CONFIG))
    model.save_pretrained(tmp_path / "m")
    again = pulse.PulseForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert again.recipe.hash() == model.recipe.hash() and again.config is None
    ids = torch.randint(0, 300, (1, 9))
    assert torch.equal(model(ids).logits, again(ids).logits)


# SimplePulse


@pytest.mark.parametrize("gate", ["gru", "lstm", "mingru"])
def test_simple_pulse_shapes_gradients_and_param_count(gate):
    torch.manual_seed(0)
    model = pulse.SimplePulse(6, 16, 4, 3, gate_type=gate, num_heads=2)
    x = torch.randn(5, 6)
    y = model(x)
    assert y.shape == (5, 3) and torch.isfinite(y).all()
    y.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not silent
    assert model.param_count() == sum(p.numel() for p in model.parameters())
    assert model.states(x).shape == (5, 4, 16)


def test_simple_pulse_rows_are_independent_and_iterations_count():
    torch.manual_seed(0)
    model = pulse.SimplePulse(5, 16, 4, 2, num_heads=2).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    assert_close(model(x[1:2])[0], model(x)[1], "row alone vs in a batch")
    once = model(x)
    model.num_iterations = 1
    assert not torch.allclose(once, model(x))
    with pytest.raises(pulse.PulseError, match=r"expects float inputs of shape \(batch, 5\)"):
        model(torch.randn(4, 3, 5))


def test_simple_pulse_learns_a_toy_rule():
    # float64, and a bar far below what the run reaches (loss 0.79 -> 0.05, accuracy 0.99 on the reference machine),
    # so another CPU's rounding cannot decide the outcome
    torch.manual_seed(0)
    model = pulse.SimplePulse(4, 16, 4, 2, num_heads=2, num_iterations=2).double()
    x = torch.randn(128, 4, dtype=torch.float64)
    y = (x[:, 0] - x[:, 2] > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (model(x).argmax(-1) == y).float().mean() > 0.9


# SequencePulse


def seq_model(layout=("attention",), mode="last", **kw) -> pulse.SequencePulse:
    torch.manual_seed(0)
    kw.setdefault("chunk_size", 3 if "pulse" in layout else None)
    return pulse.SequencePulse(5, 16, 4, 3, output_mode=mode, layout=layout, num_heads=2, dtype=torch.float64, **kw)


@pytest.mark.parametrize("layout", SEQ_LAYOUTS.values(), ids=SEQ_LAYOUTS.keys())
@pytest.mark.parametrize("mode", ["last", "all", "mean"])
def test_sequence_pulse_padded_positions_change_nothing(layout, mode):
    model = seq_model(layout, mode)
    lengths = [7, 4, 1]
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    mask = torch.arange(7) < torch.tensor(lengths).unsqueeze(1)
    y = model(x, mask)
    noisy = torch.where(mask.unsqueeze(-1), x, torch.randn_like(x) * 5)
    y2 = model(noisy, mask)
    assert_close(y2, y, "padding changed the output")
    for row, n in enumerate(lengths):
        alone = model(x[row : row + 1, :n])
        expected = y[row, :n] if mode == "all" else y[row]
        assert_close(alone[0], expected, f"row {row} alone vs padded in a batch")
    if mode == "all":
        assert (y[~mask] == 0).all()


@pytest.mark.parametrize("layout", SEQ_LAYOUTS.values(), ids=SEQ_LAYOUTS.keys())
@pytest.mark.parametrize("mode", ["last", "all", "mean"])
def test_sequence_pulse_streams_in_pieces_and_steps(layout, mode):
    model = seq_model(layout, mode)
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    y = model(x)
    for k in (1, 3, 7):
        y1, state = model(x[:, :k], return_state=True)
        y2, _ = model(x[:, k:], state=state, return_state=True)
        assert_close(torch.cat((y1, y2), dim=1) if mode == "all" else y2, y, f"split at {k}")
    state = model.init_state(2)
    outs = []
    for t in range(8):
        out, state = model.step(x[:, t], state)
        outs.append(out)
    assert_close(torch.stack(outs, dim=1) if mode == "all" else outs[-1], y, "step vs forward")


def test_sequence_pulse_mean_is_the_running_mean_of_the_per_step_outputs():
    model = seq_model(mode="all")
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    per_step = model(x)
    model.output_mode = "mean"
    for t in range(1, 7):
        prefix_mean = model(x[:, :t])
        assert_close(prefix_mean, per_step[:, :t].mean(dim=1), f"mean after {t} steps")


def test_sequence_pulse_mask_mistakes_are_pulse_errors():
    model = seq_model()
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    with pytest.raises(pulse.PulseError, match="right padding"):
        model(x, torch.tensor([[True, False, True, True], [True] * 4]))
    with pytest.raises(pulse.PulseError, match="no real steps"):
        model(x, torch.tensor([[False] * 4, [True] * 4]))
    _, state = model(x, torch.tensor([[True, True, False, False], [True] * 4]), return_state=True)
    with pytest.raises(pulse.PulseError, match="cannot be continued"):
        model(x, state=state)
    with pytest.raises(pulse.PulseError, match="expects float inputs of shape"):
        model(torch.randn(2, 4, 6, dtype=torch.float64))


def test_sequence_pulse_from_a_recipe_matches_the_python_constructor():
    recipe = pulse.recipe_from_dict({"model": {
        "kind": "sequence_pulse", "input_dim": 5, "output_dim": 3, "output_mode": "mean", "dim": 16, "depth": 2,
        "layout": ["attention"], "mixers": {"attention": {"kind": "attention", "num_heads": 2}},
        "mlp": {"kind": "swiglu"},
    }})
    built = pulse.build_model(recipe, device="meta")
    direct = pulse.SequencePulse(5, 16, None, 3, output_mode="mean", layout=("attention",), num_heads=2, device="meta")
    assert shapes(built) == shapes(direct) and built.output_mode == "mean"
    torch.manual_seed(0)
    model = pulse.build_model(recipe)
    y = model(torch.randn(2, 9, 5))
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "simple_pulse", "input_dim": 12, "output_dim": 4, "slot_dim": 16, "num_slots": 4, "num_heads": 2},
        {"kind": "sequence_pulse", "input_dim": 12, "output_dim": 4, "dim": 16, "layout": ["attention"],
         "mixers": {"attention": {"kind": "attention", "num_heads": 2}}},
    ],
    ids=["simple_pulse", "sequence_pulse"],
)
def test_model_kinds_build_summarize_and_save(tmp_path, model):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model": model}))
    result = run_cli("summarize", path, "--seq-len", "32", "--json")
    assert result.exit_code == 0, result.output
    recipe = pulse.load_recipe(path)
    built = pulse.build_model(recipe)
    assert json.loads(result.stdout)["total_params"] == sum(p.numel() for p in built.parameters())
    assert run_cli("summarize", path, "--seq-len", "32").exit_code == 0
    pulse.save_checkpoint(built, recipe, tmp_path / "ckpt")
    loaded, _ = pulse.load_checkpoint(tmp_path / "ckpt")
    assert all(
        torch.equal(a, b) for a, b in zip(built.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_model_kind_spec_errors_name_the_path():
    with pytest.raises(pulse.PulseError, match=r"model: num_heads \(3\) must divide slot_dim \(16\)"):
        pulse.recipe_from_dict(
            {"model": {"kind": "simple_pulse", "input_dim": 4, "output_dim": 2, "slot_dim": 16, "num_heads": 3}}
        )
    with pytest.raises(pulse.PulseError, match="model.output_mode"):
        pulse.recipe_from_dict(
            {"model": {"kind": "sequence_pulse", "input_dim": 4, "output_dim": 2, "output_mode": "max"}}
        )


def test_the_layer_table_walks_each_kind_of_layer_once_and_still_covers_every_layer(monkeypatch):
    import torchinfo

    from pulse.models.stack import Residual
    from pulse.summarize import summarize

    def build(depth: int):
        recipe = pulse.load_recipe(ROOT / "recipes/hybrid.toml", [f"model.depth={depth}", "model.dim=32"])
        return pulse.build_model(recipe, device="meta")

    model = build(6)  # the layout cycles pulse, pulse, attn: two kinds of layer
    full = torchinfo.summary(model, input_data=[model.example_input(1, 64, device="meta")], depth=4, verbose=0,
                             device="meta")
    expected = [(r.depth, r.var_name if r.depth else "(model)", r.class_name, list(r.output_size or []))
                for r in full.summary_list if r.depth <= 4]
    calls = []
    real = Residual.forward
    monkeypatch.setattr(Residual, "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    summary = summarize(model, seq_len=64, depth=4)
    assert [(r.depth, r.name, r.type, r.output_shape) for r in summary.layers] == expected
    assert summary.mult_adds == full.total_mult_adds
    walked = len(calls)
    calls.clear()
    deep = summarize(build(60), seq_len=64, depth=4)
    assert len(calls) == walked == 2  # the work is per kind of layer, not per layer
    assert sum(1 for r in deep.layers if r.depth == 3 and r.type == "Residual") == 60  # model → stack → layers
