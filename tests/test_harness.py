"""pulse eval --harness: lm-evaluation-harness on PULSE models, offline, on the tasks PULSE ships."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pulse
from helpers import run_cli

pytest.importorskip("lm_eval", reason="the eval extra (pip install 'pulse[eval]') is not installed")
pytest.importorskip("accelerate", reason="the eval extra (pip install 'pulse[eval]') is not installed")

from pulse.hf.export import export_hf  # noqa: E402
from pulse.hf.harness import local_tasks_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A small hybrid with bos/eos (vocab 259), its weights written by `pulse build --out`."""
    out = tmp_path_factory.mktemp("harness") / "run"
    result = run_cli("build", ROOT / "recipes/hybrid.toml", "--set", "model.dim=32", "--set", "model.depth=3",
                     "--set", "model.vocab_size=259", "--set", "model.mixers.pulse.chunk_size=8", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_harness_runs_the_shipped_tasks_offline_and_writes_its_json(built):
    result = run_cli("eval", built, "--harness", "pulse_arith_mc,pulse_continuation", "--limit", "6", "--json",
                     env=OFFLINE)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert 0.0 <= shown["results"]["pulse_arith_mc"]["acc,none"] <= 1.0
    assert shown["results"]["pulse_continuation"]["perplexity,none"] > 1.0
    written = json.loads((built / "harness" / "pulse_arith_mc+pulse_continuation.json").read_text())
    assert written["results"]["pulse_arith_mc"]["acc,none"] == shown["results"]["pulse_arith_mc"]["acc,none"]


def test_the_plain_lm_eval_cli_on_an_export_gives_the_same_numbers(built, tmp_path):
    lm = pulse.PulseForCausalLM.from_pretrained(built)
    export_hf(lm, tmp_path / "hf")
    ours = run_cli("eval", built, "--harness", "pulse_continuation", "--json", env=OFFLINE)
    assert ours.exit_code == 0, ours.output
    cli = Path(sys.executable).parent / "lm_eval"
    done = subprocess.run(
        [str(cli), "--model", "hf", "--model_args", f"pretrained={tmp_path / 'hf'},trust_remote_code=True",
         "--tasks", "pulse_continuation", "--include_path", str(local_tasks_dir()), "--device", "cpu",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **OFFLINE}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "out").rglob("results*.json")).read_text())["results"]["pulse_continuation"]
    mine = json.loads(ours.stdout)["results"]["pulse_continuation"]
    assert theirs["perplexity,none"] == pytest.approx(mine["perplexity,none"], rel=1e-4)
    assert theirs["acc,none"] == mine["acc,none"]


@pytest.mark.parametrize("args, message", [
    (["--harness", "pulse_arith"], r"no task named `pulse_arith` \(did you mean `pulse_arith_mc`"),
    (["--harness", "pulse_arith_mc", "--include-path", "EMPTY"], r"no task files \(\*.yaml\)"),
    (["--harness", "hellaswag", "--limit", "1"], r"would be downloaded from the Hugging Face Hub.*--include-path"),
])
def test_bad_harness_input_is_one_clear_error(built, tmp_path, args, message):
    import re

    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    result = run_cli("eval", built, *args, env=OFFLINE)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
    assert re.search(message, " ".join(result.stderr.split())), result.stderr


def test_a_recipe_has_no_weights_to_evaluate():
    result = run_cli("eval", ROOT / "recipes/hybrid.toml", "--harness", "pulse_arith_mc")
    assert result.exit_code == 2 and "has no trained weights" in result.stderr
