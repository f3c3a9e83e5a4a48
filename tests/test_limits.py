"""Recipe limits, checked before anything is built: strict types, finite numbers, sane sizes, short messages."""

from __future__ import annotations

import time

import pytest

import pulse
from helpers import run_cli
from pulse.errors import PulseError
from pulse.specs.load import apply_overrides, read_table

BASE = {"model": {"from": "transformer-small", "dim": 32, "depth": 2, "mixers": {"attn": {"num_heads": 2}}}}


def load(*overrides: str):
    return pulse.recipe_from_dict(BASE, list(overrides))


@pytest.mark.parametrize("override, message", [
    ("model.depth=true", "model.depth: must be a whole number, not true (a boolean)"),
    ('model.depth="4"', "model.depth: must be a whole number, not '4'"),
    ("model.tie_embeddings=1", "model.tie_embeddings: must be true or false, not 1"),
    ('model.tie_embeddings="yes"', "model.tie_embeddings: must be true or false, not 'yes'"),
    ("train.lr=inf", "must be finite"),
    ("train.lr=nan", "must be finite"),
    ("train.lr=true", "train.lr: must be a number, not true"),
    ("train.betas=[0.9, true]", "train.betas.1: must be a number"),
    ("model.dim=1e21", "beyond the sane limit of 65,536 for `dim`"),
    ("model.depth=1000000", "beyond the sane limit of 1,024 for `depth`"),
    ("model.vocab_size=9223372036854775807", "beyond the sane limit"),
    ("train.steps=99999999999", "beyond the sane limit"),
])
def test_lax_or_huge_values_are_refused_with_the_path(override, message):
    with pytest.raises(PulseError) as info:
        load(override)
    assert message in str(info.value)


def test_communication_yes_is_not_a_boolean():
    data = {"model": {"from": "pulse-small", "dim": 32, "depth": 1}}
    mixer = next(iter(pulse.recipe_from_dict(data).model.mixers))
    with pytest.raises(PulseError, match="must be true or false, not 'yes'"):
        pulse.recipe_from_dict(data, [f"model.mixers.{mixer}.communication=\"yes\""])


def test_a_huge_kind_string_gives_a_short_message_quickly():
    start = time.perf_counter()  # a did-you-mean over 50 M characters would take hours; 60 s tells that from a slow CPU
    with pytest.raises(PulseError) as info:
        pulse.recipe_from_dict({"model": {"kind": "x" * 50_000_000}})
    assert time.perf_counter() - start < 60 and len(str(info.value)) < 400
    with pytest.raises(PulseError) as info:
        pulse.recipe_from_dict({"model": {"kind": "y" * 4000, "dim": 8}})
    assert len(str(info.value)) < 1500


def test_deep_nesting_and_long_paths_are_refused_without_recursion_errors(tmp_path):
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(PulseError, match="nested"):
        pulse.recipe_from_dict({"model": deep})
    path = tmp_path / "deep.toml"
    path.write_text("[model]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(PulseError, match="nested|not valid TOML"):
        read_table(path)
    with pytest.raises(PulseError, match="at most 12"):
        apply_overrides({}, [".".join(["a"] * 1000) + "=1"])
    with pytest.raises(PulseError, match="nested"):
        load("model.x=" + "[" * 500 + "]" * 500)
    with pytest.raises(PulseError, match="zoo card"):
        pulse.recipe_from_dict({"model": {"from": "c" * 300}})


def test_cli_validate_exits_2_on_a_limit(tmp_path):
    result = run_cli("validate", "recipes/hybrid.toml", "--set", "model.depth=true")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_every_shipped_recipe_and_card_is_within_the_limits():
    from pathlib import Path

    from pulse.specs.load import card_names, load_recipe

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "recipes").glob("*.toml")):
        load_recipe(path)
    for name in card_names():
        pulse.recipe_from_dict({"model": {"from": name}})


@pytest.mark.parametrize("setting, message", [
    ("train.lr=1e21", "train.lr: input should be less than or equal to 10"),
    ("train.weight_decay=1e308", "train.weight_decay: input should be less than or equal to 10"),
    ("train.betas=[0.9, 1.5]", "train.betas.1: input should be less than 1"),
    ("train.eps=5", "train.eps: input should be less than or equal to 1"),
    ("train.grad_clip=1e300", "train.grad_clip: input should be less than or equal to 1000000"),
])
def test_optimiser_numbers_that_cannot_be_meant_are_refused(setting, message):
    with pytest.raises(PulseError, match=message.replace(".", r"\.")):
        pulse.load_recipe("recipes/hybrid.toml", [setting])
