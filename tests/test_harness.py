"""pulse eval --harness: lm-evaluation-harness on PULSE models, offline, on the tasks PULSE ships; and the plain
`lm_eval --model hf` on the export of every shipped byte-level language-model recipe.

Cost: lm-eval's index of its own ~15,000 tasks takes about a minute to build, so it is built as rarely as
possible — the shipped tasks need none, the in-process checks that need it share one (harness._task_manager),
and one `lm_eval` process checks the plain CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pulse
from helpers import run_cli

pytest.importorskip("lm_eval", reason="the eval extra (pip install 'pulse[eval]') is not installed")
pytest.importorskip("accelerate", reason="the eval extra (pip install 'pulse[eval]') is not installed")

from pulse.evaluation.harness import LOCAL, local_tasks_dir  # noqa: E402
from pulse.export.hf import export_hf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SMALL = ["model.dim=32", "model.mixers.pulse.chunk_size=8"]


def byte_language_recipes() -> list[str]:
    """Every shipped recipe of a language model that reads bytes (vocabulary 256, or 259 with bos/eos/pad)."""
    from pulse.data.tokenizer import ByteTokenizer

    names = []
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        source = pulse.open_source(path)
        if source.recipe.model.kind != "lm":
            continue
        try:
            tokenizer = source.tokenizer
        except pulse.PulseError:  # a token model below 256 ids (bAbI) reads no text
            continue
        if isinstance(tokenizer, ByteTokenizer):
            names.append(path.name)
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """recipes/hybrid.toml as shipped (bytes, vocabulary 256: no bos/eos), narrowed; weights by `pulse build`."""
    out = tmp_path_factory.mktemp("harness") / "run"
    result = run_cli("build", ROOT / "recipes/hybrid.toml", *(a for s in SMALL for a in ("--set", s)), "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def ours(built) -> dict:
    """`pulse eval --harness` on both shipped tasks, once for the checks below."""
    result = run_cli("eval", built, "--harness", "pulse_arith_mc,pulse_continuation", "--limit", "6", "--json",
                     env=OFFLINE)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_harness_runs_the_shipped_tasks_offline_and_writes_its_json(built, ours):
    assert 0.0 <= ours["results"]["pulse_arith_mc"]["acc,none"] <= 1.0
    assert ours["results"]["pulse_continuation"]["perplexity,none"] > 1.0
    written = json.loads((built / "harness" / "pulse_arith_mc+pulse_continuation.json").read_text())
    assert written["results"] == ours["results"]


@pytest.mark.audit("lm-eval", "correct")
def test_the_plain_lm_eval_cli_on_a_byte_export_gives_the_same_numbers(built, ours, tmp_path):
    """The audit's case: a vocabulary-256 export crashed inside lm-eval (no bos/eos for its prefix)."""
    export_hf(pulse.PulseForCausalLM.from_pretrained(built), tmp_path / "hf")
    cli = Path(sys.executable).parent / "lm_eval"
    done = subprocess.run(
        [str(cli), "--model", "hf", "--model_args", f"pretrained={tmp_path / 'hf'},trust_remote_code=True",
         "--tasks", "pulse_arith_mc,pulse_continuation", "--include_path", str(local_tasks_dir()), "--limit", "6",
         "--device", "cpu", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **OFFLINE}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "out").rglob("results*.json")).read_text())["results"]
    for task, metric in (("pulse_arith_mc", "acc,none"), ("pulse_continuation", "perplexity,none"),
                         ("pulse_continuation", "acc,none")):
        assert theirs[task][metric] == pytest.approx(ours["results"][task][metric], rel=1e-4), (task, metric)


@pytest.fixture(scope="module")
def local_tasks() -> dict:
    """The shipped tasks, loaded once for the checks of every recipe (lm-eval rebuilds their requests each run)."""
    import warnings

    from lm_eval.tasks import get_task_dict

    from pulse.evaluation.harness import _task_manager

    with warnings.catch_warnings():  # the form evaluate() takes; lm-eval 0.4.13 calls it deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return get_task_dict(list(LOCAL), _task_manager((str(local_tasks_dir()),), defaults=False))


@pytest.mark.parametrize("recipe", byte_language_recipes())
@pytest.mark.audit("lm-eval", "correct")
def test_lm_evals_hf_model_runs_on_the_export_of_every_shipped_byte_recipe(recipe, local_tasks, tmp_path):
    """lm-eval's `hf` model built as `lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True` builds
    it loads the export by path and scores it (a vocabulary without bos/eos crashed there)."""
    from lm_eval.api.registry import get_model
    from lm_eval.evaluator import evaluate

    export_hf(pulse.PulseForCausalLM.from_recipe(ROOT / "recipes" / recipe, ["model.dim=32"]), tmp_path / "hf")
    model = get_model("hf").create_from_arg_string(f"pretrained={tmp_path / 'hf'},trust_remote_code=True",
                                                   {"device": "cpu", "batch_size": 1})
    results = evaluate(model, local_tasks, limit=1, bootstrap_iters=0, verbosity="ERROR")["results"]
    assert 0.0 <= results["pulse_arith_mc"]["acc,none"] <= 1.0
    assert results["pulse_continuation"]["perplexity,none"] > 1.0


@pytest.mark.audit("lm-eval", "correct")
def test_no_accelerate_note_on_a_harness_run(built, caplog):
    """lm-eval warns "do not launch via accelerate" whenever it is handed a model object; PULSE launches nothing."""
    from pulse.evaluation.harness import run_harness

    with caplog.at_level(logging.WARNING):
        run_harness(pulse.PulseForCausalLM.from_pretrained(built), ["pulse_arith_mc"], limit=1)
    assert not [r for r in caplog.records if "accelerate" in r.getMessage()], caplog.text


@pytest.mark.parametrize("args, message", [
    (["--harness", "pulse_arith"], r"no task named `pulse_arith` \(did you mean `pulse_arith_mc`"),
    (["--harness", "pulse_arith_mc", "--include-path", "EMPTY"], r"no task files \(\*.yaml\)"),
    (["--harness", "hellaswag", "--limit", "1"], r"would be downloaded from the Hugging Face Hub.*--include-path"),
])
@pytest.mark.audit("lm-eval", "clean")
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
