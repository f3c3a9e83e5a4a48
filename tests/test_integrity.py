"""Integrity: checkpoints without their checksum or recipe hash are refused; stored paths are not followed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pulse
from helpers import run_cli
from pulse.errors import PulseError
from pulse.evaluation import evaluate_checkpoint
from pulse.storage.checkpoint import WEIGHTS, load_weights, recipe_hash, save_checkpoint
from pulse.train import train
from test_train import recipe, recipe_dict, write_recipe


@pytest.fixture
def trained(tmp_path) -> Path:
    train(recipe(steps=2, eval_every=0), tmp_path / "run")
    return tmp_path / "run"


def rewrite(path: Path, drop: str | None = None, recipe_change=None) -> None:
    """Rewrite a checkpoint's metadata: drop a key, or change the stored recipe (with a matching hash)."""
    file = path / WEIGHTS
    with safe_open(str(file), framework="pt") as f:
        meta = dict(f.metadata())
    if recipe_change is not None:
        data = json.loads(meta["pulse_recipe"])
        recipe_change(data)
        meta["pulse_recipe"] = json.dumps(data, sort_keys=True)
        meta["pulse_recipe_hash"] = recipe_hash(data)
        (path / "recipe.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")  # its readable copy too
    if drop:
        meta.pop(drop)
    save_file(load_file(str(file)), str(file), metadata=meta)


@pytest.mark.parametrize("key", ["pulse_sha256", "pulse_recipe_hash"])
def test_a_checkpoint_without_an_integrity_key_is_refused_unless_allowed(tmp_path, key):
    model_recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small", "dim": 32, "depth": 1,
                                                     "mixers": {"attn": {"num_heads": 2}}}})
    model = pulse.build_model(model_recipe)
    save_checkpoint(model, model_recipe, tmp_path / "ckpt")
    rewrite(tmp_path / "ckpt", drop=key)
    with pytest.raises(PulseError, match=rf"no `{key}`.*allow_unverified=True.*--allow-unverified"):
        pulse.load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(PulseError, match=key):
        load_weights(pulse.build_model(model_recipe), tmp_path / "ckpt")
    loaded, _ = pulse.load_checkpoint(tmp_path / "ckpt", allow_unverified=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    ckpt = tmp_path / "ckpt"
    # every command that loads a checkpoint refuses it, and takes the --allow-unverified its error names
    commands = [("generate", ckpt, "--prompt", "hi", "--max-new-tokens", "2"),
                ("viz", ckpt, "--prompt", "hi", "--out", tmp_path / "viz", "--only", "attention")]
    if key == "pulse_recipe_hash":  # these read the stored recipe only, not the weights
        commands += [("summarize", ckpt, "--json"), ("build", ckpt)]
    else:
        assert run_cli("summarize", ckpt, "--json").exit_code == 0
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        commands.append(("export", ckpt, "--out", tmp_path / "m.onnx"))
    for args in commands:
        shown = run_cli(*args)
        assert shown.exit_code == 2 and key in shown.stderr and "--allow-unverified" in shown.stderr, args
        allowed = run_cli(*args, "--allow-unverified")
        assert allowed.exit_code == 0, (args, allowed.stderr)
    assert pulse.PulseForCausalLM.from_pretrained(ckpt, allow_unverified=True).vocab_size == 256


def test_eval_and_resume_refuse_an_unverified_checkpoint(trained):
    rewrite(trained, drop="pulse_sha256")
    assert run_cli("eval", trained).exit_code == 2
    assert run_cli("eval", trained, "--allow-unverified", "--json").exit_code == 0
    step = max((trained / "checkpoints").iterdir())
    rewrite(step, drop="pulse_sha256")
    with pytest.raises(PulseError, match="none of its"):
        train(recipe(steps=4, eval_every=0), trained, resume=True)


def test_fine_tuning_from_an_unverified_run_needs_allow_unverified(trained, tmp_path):
    rewrite(trained, drop="pulse_sha256")
    start = write_recipe(tmp_path / "start.toml", recipe_dict(steps=1, eval_every=0, checkpoint_every=0))
    refused = run_cli("train", start, "--init", trained, "--out", tmp_path / "a", "--quiet")
    assert refused.exit_code == 2 and "pulse_sha256" in refused.stderr and "--allow-unverified" in refused.stderr
    assert not (tmp_path / "a" / "model.safetensors").exists()
    allowed = run_cli("train", start, "--init", trained, "--out", tmp_path / "b", "--quiet", "--allow-unverified")
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads((tmp_path / "b" / "init_from.json").read_text())["from"] == str(trained)


@pytest.mark.parametrize("where, value", [
    ("task.path", "/nonexistent/secret.txt"), ("task.path", "../../secret.txt"), ("task.pattern", "../../**"),
    ("bench.vs", ["/tmp/elsewhere.toml"]),
])
def test_paths_inside_a_stored_recipe_are_not_followed(trained, where, value):
    table, key = where.split(".")

    def change(data):
        if table == "task":
            data["task"] = {"kind": "text", "path": "corpus.txt", "seq_len": 16}
        data[table][key] = value

    rewrite(trained, recipe_change=change)
    if where == "task.pattern":  # a pattern that climbs out of task.path is no valid recipe: refused at load
        with pytest.raises(PulseError, match="climbs out of task.path"):
            pulse.load_checkpoint(trained)
        return
    # loading the model reads no task data and no bench list, so it follows no path and works
    model, _ = pulse.load_checkpoint(trained)
    assert sum(p.numel() for p in model.parameters()) > 0
    if table == "task":
        result = run_cli("train", trained, "-q")
        assert result.exit_code == 2 and f"{where} = {value!r}" in result.stderr, result.output
        # an absolute one is followed only where it exists (test_eval_limits), so here it is named as missing
        with pytest.raises(PulseError, match="not followed|does not exist on this machine"):
            evaluate_checkpoint(trained)
        # a task the user typed replaces the stored one, so its paths are theirs
        with pytest.raises(PulseError) as typed:
            evaluate_checkpoint(trained, task={"kind": "text", "path": str(trained / "nothing.txt")})
        assert "not followed" not in str(typed.value)
    else:  # the bench follows its vs list, and so refuses it; it reads no task data, so a stored task path is harmless
        result = run_cli("bench", trained, "--seq-lens", "8", "--rounds", "1")
        assert result.exit_code == 2 and "not followed" in result.stderr


def test_a_card_reference_is_a_name_never_a_path():
    for bad in ["../recipes/hybrid", "/etc/passwd", "zoo/pulse-small", "x" * 300, ".hidden"]:
        with pytest.raises(PulseError, match="zoo card"):
            pulse.recipe_from_dict({"model": {"from": bad}})


def test_non_finite_weights_are_refused_and_a_converted_dtype_is_said(tmp_path):
    from pulse.errors import PulseWarning
    from pulse.storage.checkpoint import tensors_digest

    model_recipe = pulse.recipe_from_dict({"model": {"from": "transformer-small", "dim": 32, "depth": 1,
                                                     "mixers": {"attn": {"num_heads": 2}}}})
    save_checkpoint(pulse.build_model(model_recipe), model_recipe, tmp_path / "ckpt")
    file = tmp_path / "ckpt" / WEIGHTS
    with safe_open(str(file), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(file))
    name = sorted(tensors)[0]
    poisoned = {**tensors, name: torch.full_like(tensors[name], float("nan"))}
    save_file(poisoned, str(file), metadata={**meta, "pulse_sha256": tensors_digest(poisoned)})  # a valid checksum
    with pytest.raises(PulseError, match=rf"1 tensor\(s\) hold NaN or inf: {name}.*--allow-unverified"):
        pulse.load_checkpoint(tmp_path / "ckpt")
    shown = run_cli("eval", tmp_path / "ckpt", "--task", "mqar")
    assert shown.exit_code == 2 and "hold NaN or inf" in shown.stderr
    pulse.load_checkpoint(tmp_path / "ckpt", allow_unverified=True)  # the escape
    half = {k: v.half() for k, v in tensors.items()}
    save_file(half, str(file), metadata={**meta, "pulse_sha256": tensors_digest(half)})
    with pytest.warns(PulseWarning, match=r"stored as torch.float16 → torch.float32; converted"):
        pulse.load_checkpoint(tmp_path / "ckpt")
