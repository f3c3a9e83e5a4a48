"""Every zoo card and every shipped recipe validates, builds, and trains a step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pulse
from pulse.specs.load import card_names
from pulse.summarize import summarize

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
CARDS = card_names()
TINY = ["model.dim=32", "model.depth=2"]


def test_there_is_something_to_test():
    assert RECIPES and "transformer-small" in CARDS


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_builds_on_meta(path):
    recipe = pulse.load_recipe(path)
    model = pulse.build_model(recipe, device="meta")
    summary = summarize(model, seq_len=256, table=False)
    assert summary.total_params == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert sum(b.params for b in summary.blocks) == summary.total_params


@pytest.mark.parametrize("card", CARDS)
def test_card_builds_and_every_parameter_learns(card):
    recipe = pulse.recipe_from_dict({"model": {"from": card}})
    model = pulse.build_model(recipe, device="meta")
    assert sum(p.numel() for p in model.parameters()) > 0
    torch.manual_seed(0)
    model = pulse.build_model(recipe)
    x = model.example_input(2, 67)
    if x.is_floating_point():
        x = torch.randn_like(x)
    out = model(x)
    out = out[0] if isinstance(out, tuple) else getattr(out, "logits", out)
    out.float().square().mean().backward()
    silent = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())
    ]
    assert not silent, f"{card}: parameters without a finite gradient: {silent}"


@pytest.mark.parametrize("card", CARDS)
def test_card_file_is_itself_a_recipe(card):
    from pulse.specs.load import card_path

    direct = pulse.load_recipe(card_path(card))
    via_from = pulse.recipe_from_dict({"model": {"from": card}})
    assert direct.hash() == via_from.hash()


def test_card_override_merges_deeply():
    recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small", "mixers": {"attn": {"num_heads": 8}}}})
    assert recipe.model.mixers["attn"].num_heads == 8
    assert recipe.model.depth == 4  # from the card


def test_dotted_overrides_are_validated_like_the_file():
    recipe = pulse.load_recipe(ROOT / "recipes/transformer.toml", ["model.depth=3", "model.mixers.attn.num_heads=2"])
    assert recipe.model.depth == 3 and recipe.model.mixers["attn"].num_heads == 2
    with pytest.raises(pulse.PulseError, match=r"model\.mixers\.attn: num_heads \(3\) must divide dim"):
        pulse.load_recipe(ROOT / "recipes/transformer.toml", ["model.mixers.attn.num_heads=3"])


def test_layout_cycles_over_depth_and_layers_override():
    recipe = pulse.recipe_from_dict({"model": {
        "dim": 32, "depth": 5, "layout": ["a", "b"],
        "mixers": {
            "a": {"kind": "attention"},
            "b": {"kind": "attention", "num_heads": 2},
            "c": {"kind": "attention", "num_heads": 8},
        },
        "layers": {"4": "c"},
    }})
    assert recipe.model.mixer_names() == ["a", "b", "a", "b", "c"]
    model = pulse.build_model(recipe, device="meta")
    assert [layer.mixer.num_heads for layer in model.layers] == [4, 2, 4, 2, 8]


def test_recipe_hash_is_stable_and_sensitive():
    a = pulse.load_recipe(ROOT / "recipes/transformer.toml")
    b = pulse.load_recipe(ROOT / "recipes/transformer.toml")
    c = pulse.load_recipe(ROOT / "recipes/transformer.toml", ["model.depth=2"])
    assert a.hash() == b.hash() != c.hash()


def test_stored_recipe_round_trips():
    a = pulse.load_recipe(ROOT / "recipes/transformer.toml")
    b = pulse.recipe_from_dict(a.to_dict())
    assert a.to_dict() == b.to_dict() and a.hash() == b.hash()


def test_lm_split_and_step_equal_full_forward():
    torch.manual_seed(0)
    recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small"}}, TINY)
    model = pulse.build_model(recipe, dtype=torch.float64).eval()
    ids = torch.randint(0, 256, (2, 13))
    full, _ = model(ids)
    first, state = model(ids[:, :5])
    rest, _ = model(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat((first, rest), 1), full)
    state = model.init_state(2)
    steps = []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full)


def test_learned_positions_continue_and_refuse_overflow():
    recipe = pulse.recipe_from_dict(
        {"model": {"from": "transformer-small", "positions": {"kind": "learned", "max_seq_len": 16}}}, TINY
    )
    model = pulse.build_model(recipe, dtype=torch.float64).eval()
    ids = torch.randint(0, 256, (1, 10))
    full, _ = model(ids)
    a, state = model(ids[:, :4])
    b, state = model(ids[:, 4:], state)
    torch.testing.assert_close(torch.cat((a, b), 1), full)
    with pytest.raises(pulse.PulseError, match="max_seq_len"):
        model(torch.randint(0, 256, (1, 7)), state)


def test_rotary_step_at_any_position_matches_forward():
    torch.manual_seed(0)
    att = pulse.build_mixer("attention", 32, dtype=torch.float64, rotary_base=10000.0)
    x = torch.randn(1, 40, 32, dtype=torch.float64)
    y, _ = att(x)
    _, state = att(x[:, :37])
    y_t, _ = att.step(x[:, 37], state)
    torch.testing.assert_close(y_t, y[:, 37])


def test_bad_token_ids_are_a_clear_error():
    model = pulse.build_model(pulse.recipe_from_dict({"model": {"from": "transformer-small"}}, TINY))
    with pytest.raises(pulse.PulseError, match="token ids must lie in"):
        model(torch.tensor([[1, 300]]))
    with pytest.raises(pulse.PulseError, match="integer token ids"):
        model(torch.randn(1, 3))


def test_build_mixer_validates_params():
    with pytest.raises(pulse.PulseError, match="did you mean `num_heads`"):
        pulse.build_mixer("attention", 32, num_head=2)
    with pytest.raises(pulse.PulseError, match="must divide dim"):
        pulse.build_mixer("attention", 30)
    with pytest.raises(pulse.PulseError, match="unknown mixer kind `atention`.*did you mean `attention`"):
        pulse.build_mixer("atention", 32)
