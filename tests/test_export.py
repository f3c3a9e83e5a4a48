"""ONNX export: the transformer, pure PULSE and hybrid cards export with a dynamic length and match torch in
onnxruntime; bad input and blocks that cannot be exported give one clear PulseError (exit 2 from the CLI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import pulse
from helpers import run_cli
from pulse.export import onnx as export_mod
from pulse.export.onnx import export_onnx

ROOT = Path(__file__).resolve().parent.parent
MISSING = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[onnx]')")
SMALL = ["model.dim=32", "model.mixers.pulse.chunk_size=8"]
MANAGED_ADAPTIVE = """
[model]
kind = "lm"
vocab_size = 256
dim = 32
depth = 2
layout = ["m", "a"]

[model.mixers.m]
kind = "pulse_managed"
max_slots = 8
init_slots = 6
chunk_size = 4
gate = "mingru"

[model.mixers.a]
kind = "pulse_adaptive"
min_slots = 2
max_slots = 8
chunk_size = 4
local = "conv"
"""


def model(recipe: Path, overrides: list[str]) -> pulse.PulseForCausalLM:
    torch.manual_seed(0)
    return pulse.PulseForCausalLM.from_recipe(recipe, overrides).eval()


def check_runs_at_other_lengths(path: Path, lm: pulse.PulseForCausalLM, lengths=(1, 13, 40)) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in lengths:
        ids = torch.randint(0, 256, (1, n))
        (got,) = session.run(["logits"], {"input_ids": ids.numpy()})
        with torch.no_grad():
            expected = lm(ids).logits.numpy()
        assert got.shape == expected.shape and abs(got - expected).max() < 1e-4, n


@needs_onnx
@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("transformer.toml", ["model.dim=32", "model.depth=1"]),
        ("pulse.toml", SMALL + ["model.depth=1", "model.mixers.pulse.gate=lstm", "model.mixers.pulse.local=conv"]),
    ],
)
def test_cards_export_with_a_dynamic_length(tmp_path, recipe, overrides):
    lm = model(ROOT / "recipes" / recipe, overrides)
    report = export_onnx(lm, tmp_path / "m.onnx")
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert len(report.errors) == 2 and report.max_error < 1e-4
    check_runs_at_other_lengths(report.path, lm)


@needs_onnx
def test_managed_and_adaptive_layers_export(tmp_path):
    recipe = tmp_path / "ma.toml"
    recipe.write_text(MANAGED_ADAPTIVE)
    lm = model(recipe, [])
    report = export_onnx(lm, tmp_path / "ma.onnx")
    assert report.max_error < 1e-4
    check_runs_at_other_lengths(report.path, lm, lengths=(3, 9))


@needs_onnx
def test_cli_export_hybrid_and_convert_errors(tmp_path):
    out = tmp_path / "hybrid.onnx"
    result = run_cli("export", ROOT / "recipes/hybrid.toml", "--format", "onnx", "--out", out,
                     *[a for o in SMALL + ["model.depth=3"] for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    assert "max |logits onnx − torch|" in result.stdout and out.is_file()
    check_runs_at_other_lengths(out, model(ROOT / "recipes/hybrid.toml", SMALL + ["model.depth=3"]), lengths=(5, 30))
    pickle = run_cli("convert", "--input", tmp_path / "model.pt", "--output", tmp_path / "x.onnx", "--format", "onnx")
    assert pickle.exit_code == 2 and "is a pickle file" in pickle.output
    (tmp_path / "model.pt").write_bytes(b"\x80\x04")
    pickle = run_cli("convert", "--input", tmp_path / "model.pt", "--output", tmp_path / "x.onnx", "--format", "onnx")
    assert pickle.exit_code == 2 and "safetensors" in pickle.output
    fmt = run_cli("export", ROOT / "recipes/hybrid.toml", "--format", "tflite", "--out", tmp_path / "x.tflite")
    assert fmt.exit_code == 2 and "onnx" in fmt.output
    other = run_cli("export", ROOT / "recipes/listops-sequence.toml", "--out", tmp_path / "x.onnx")
    assert other.exit_code == 2 and "language-model" in other.output
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_a_block_that_cannot_be_traced_is_named(tmp_path, monkeypatch):
    lm = model(ROOT / "recipes/hybrid.toml", SMALL + ["model.depth=3"])
    mixer = lm.model.layers[1].mixer

    def data_dependent(x):
        if x.sum() > 0:  # a branch on values: torch.export cannot trace it
            return x
        return -x

    monkeypatch.setattr(mixer, "_forward_export", data_dependent)
    with pytest.raises(pulse.PulseError, match=r"layers\.1 \(PulseLayer\)"):
        export_onnx(lm, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_a_mismatch_above_tolerance_writes_nothing(tmp_path, monkeypatch):
    lm = model(ROOT / "recipes/transformer.toml", ["model.dim=32", "model.depth=1"])

    class Program:
        def save(self, path, external_data=False):
            Path(path).write_bytes(b"onnx")

    monkeypatch.setattr(export_mod, "require_onnx", lambda: None)
    monkeypatch.setattr(export_mod, "_onnx_program", lambda wrapper, example: Program())
    monkeypatch.setattr(export_mod, "_verify", lambda *a: {7: 2e-7, 29: 0.5})
    with pytest.raises(pulse.PulseError, match=r"tolerance 0\.001 .*length 29: 0\.5"):
        export_onnx(lm, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir()), "a failed export left a file behind"


def test_missing_onnx_and_bad_arguments_are_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(pulse.PulseError, match=r"onnxruntime.*\[onnx\]"):
        export_onnx(model(ROOT / "recipes/transformer.toml", ["model.dim=32", "model.depth=1"]), tmp_path / "m.onnx")
    result = run_cli("export", ROOT / "recipes/transformer.toml", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "pulse" in result.output and "[onnx]" in result.output
    monkeypatch.setattr(export_mod, "require_onnx", lambda: None)
    with pytest.raises(pulse.PulseError, match=r"\.onnx"):
        export_onnx(model(ROOT / "recipes/transformer.toml", ["model.dim=32", "model.depth=1"]), tmp_path / "m.txt")
    seq = pulse.build_model(pulse.load_recipe(ROOT / "recipes/listops-sequence.toml"))
    with pytest.raises(pulse.PulseError, match="language models"):
        export_onnx(seq, tmp_path / "m.onnx")
