"""Checkpoints: bit-exact round trips, atomic writes, and one clear error per kind of damage."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pulse
from helpers import run_cli
from pulse.paths import atomic_write
from pulse.storage.checkpoint import WEIGHTS, load_weights, read_metadata, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": {"from": "transformer-small", "dim": 32, "depth": 2, "mixers": {"attn": {"num_heads": 2}}}}


def tiny_recipe(**model):
    return pulse.recipe_from_dict({"model": {**TINY["model"], **model}})


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    recipe = tiny_recipe()
    save_checkpoint(pulse.build_model(recipe), recipe, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_round_trip_is_bit_exact_and_keeps_tied_weights(checkpoint):
    model, recipe = pulse.load_checkpoint(checkpoint)
    torch.manual_seed(0)
    original = pulse.build_model(tiny_recipe())
    for (name, a), (_, b) in zip(original.state_dict().items(), model.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert model.head.weight is model.embed.weight
    meta = read_metadata(checkpoint)
    assert meta["pulse_recipe_hash"] == recipe.hash() and meta["pulse_version"] == pulse.__version__
    assert json.loads((checkpoint / "recipe.json").read_text()) == recipe.to_dict()


def test_round_trip_bit_exact_in_bfloat16_and_float64(tmp_path):
    for dtype in (torch.bfloat16, torch.float64):
        recipe = tiny_recipe(tie_embeddings=False)
        model = pulse.build_model(recipe, dtype=dtype)
        save_checkpoint(model, recipe, tmp_path / str(dtype))
        again = pulse.build_model(recipe, dtype=dtype)
        load_weights(again, tmp_path / str(dtype))
        assert all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
        )


def test_saving_again_replaces_atomically_and_leaves_no_temporary_files(checkpoint):
    recipe = tiny_recipe()
    save_checkpoint(pulse.build_model(recipe), recipe, checkpoint)
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.safetensors", "recipe.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("good")

    def crash(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _damage(path: Path, case: str) -> None:
    data = (path / WEIGHTS).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    if case == "truncated data":
        (path / WEIGHTS).write_bytes(data[: len(data) - 100])
    elif case == "truncated header":
        (path / WEIGHTS).write_bytes(data[: 8 + length // 2])
    elif case == "tiny file":
        (path / WEIGHTS).write_bytes(data[:5])
    elif case == "corrupt header":
        (path / WEIGHTS).write_bytes(data[:9] + b"#" * (length - 1) + data[8 + length :])
    elif case == "flipped data":
        flipped = bytearray(data)
        flipped[-3] ^= 0xFF
        (path / WEIGHTS).write_bytes(bytes(flipped))
    elif case == "edited recipe":
        meta = header["__metadata__"]
        assert '"depth": 2' in meta["pulse_recipe"]
        meta["pulse_recipe"] = meta["pulse_recipe"].replace('"depth": 2', '"depth": 3')
        save_file(load_file(str(path / WEIGHTS)), str(path / WEIGHTS), metadata=meta)
    elif case == "not a checkpoint":
        (path / WEIGHTS).write_text("[model]\nfrom = 'transformer-small'\n")
    elif case == "plain safetensors":
        save_file({"w": torch.zeros(3)}, str(path / WEIGHTS))
    elif case == "missing file":
        (path / WEIGHTS).unlink()
    elif case == "extra bytes":
        (path / WEIGHTS).write_bytes(data + b"\0" * 16)


DAMAGE = {
    "truncated data": "truncated — the tensors need",
    "truncated header": "truncated — the header alone needs",
    "tiny file": "too short to be a safetensors checkpoint",
    "corrupt header": "corrupt header (not valid JSON",
    "flipped data": "does not match its checksum",
    "edited recipe": "stored recipe does not match its hash",
    "not a checkpoint": "not a safetensors file",
    "plain safetensors": "not a PULSE checkpoint",
    "missing file": "has no model.safetensors",
    "extra bytes": "unexplained bytes after the tensor data",
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_kind_of_damage_has_its_message(checkpoint, case):
    _damage(checkpoint, case)
    with pytest.raises(pulse.PulseError) as info:
        pulse.load_checkpoint(checkpoint)
    message = str(info.value)
    assert DAMAGE[case] in message and str(checkpoint) in message, message


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_kind_of_damage_exits_2_from_the_cli(checkpoint, case):
    _damage(checkpoint, case)
    result = run_cli("generate", checkpoint, "--prompt", "hi", "--max-new-tokens", "2")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert DAMAGE[case] in " ".join(result.stderr.split()), result.stderr


def test_missing_path_names_the_path(tmp_path):
    with pytest.raises(pulse.PulseError, match=r"no such file or directory"):
        pulse.load_checkpoint(tmp_path / "nowhere.safetensors")


def test_weights_from_a_different_recipe_name_the_misshapen_tensors(checkpoint):
    other = pulse.build_model(tiny_recipe(dim=48))
    with pytest.raises(pulse.PulseError) as info:
        load_weights(other, checkpoint)
    message = str(info.value)
    assert "shape mismatch" in message and "embed.weight: file (256, 32), model (256, 48)" in message
    assert "different recipe" in message and str(checkpoint) in message
    deeper = pulse.build_model(tiny_recipe(depth=3))
    with pytest.raises(pulse.PulseError, match=r"missing \['stack\.layers\.2\."):
        load_weights(deeper, checkpoint)
    shallower = pulse.build_model(tiny_recipe(depth=1))
    with pytest.raises(pulse.PulseError, match=r"unexpected \['stack\.layers\.1\."):
        load_weights(shallower, checkpoint)


def test_summarize_and_build_accept_a_checkpoint(checkpoint):
    result = run_cli("summarize", checkpoint, "--seq-len", "64", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == sum(
        p.numel() for p in pulse.load_checkpoint(checkpoint)[0].parameters()
    )


@pytest.mark.parametrize("name", ["lm", "sequence"])
def test_a_checkpoint_saved_before_the_stack_became_a_child_loads_unchanged(name):
    """tests/data/before-composition: weights named layers.*, positions.*, final_norm.* (the models inherited the
    residual stack then), with their outputs on a fixed input; they load and compute exactly that today."""
    root = Path(__file__).parent / "data" / "before-composition"
    model, _ = pulse.load_checkpoint(root / name)
    model.eval()
    expected = load_file(str(root / "expected.safetensors"))
    with torch.no_grad():
        out = model(expected[f"{name}.input"])
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out, expected[f"{name}.output"], rtol=1e-5, atol=1e-6)


def test_a_transformers_export_saved_before_the_stack_became_a_child_loads_unchanged():
    transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")
    root = Path(__file__).parent / "data" / "before-composition"
    model = transformers.AutoModelForCausalLM.from_pretrained(root / "hf", trust_remote_code=True).eval()
    expected = load_file(str(root / "expected.safetensors"))
    with torch.no_grad():
        logits = model(input_ids=expected["lm.input"]).logits
    torch.testing.assert_close(logits, expected["lm.output"], rtol=1e-5, atol=1e-6)
