"""`pulse eval`'s long-context evaluations: projected before they run, their options checked, stored paths found.

A tiny checkpoint (`pulse build --out`, no training) of a one-attention-layer byte model on a small
corpus given by an absolute task.path serves every test.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

import pulse
from helpers import run_cli
from pulse import projection
from pulse.errors import PulseWarning
from pulse.evaluation import cost as eval_cost
from pulse.specs.load import validate
from pulse.summarize import summarize
from test_train import write_recipe

GIB = 2**30


def tiny(corpus: Path, cache: Path) -> dict:
    return {"model": {"kind": "lm", "vocab_size": 259, "dim": 16, "depth": 1, "layout": ["attn"],
                      "mixers": {"attn": {"kind": "attention", "num_heads": 2}}},
            "task": {"kind": "text", "path": str(corpus), "seq_len": 16, "val_fraction": 0.5,
                     "cache_dir": str(cache)}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("eval-limits"))


def tiny_checkpoint(root: Path) -> Path:
    """A checkpoint of a tiny text model (`pulse build --out`) under `root`, its corpus and cache beside it."""
    corpus = root / "corpus"
    corpus.mkdir()
    (root / "cache").mkdir()
    for i in range(20):
        (corpus / f"d{i}.txt").write_text(f"document {i}: the grass is green and the sky is blue {i}\n" * 3)
    built = run_cli("build", write_recipe(root / "r.toml", tiny(corpus, root / "cache")), "--out", root / "ckpt")
    assert built.exit_code == 0, built.output
    return root / "ckpt"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if an evaluation starts its work (a refusal must come before it)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr("pulse.tasks.passkey.passkey_grid", refuse)
    monkeypatch.setattr("pulse.evaluation.context._measure", refuse)
    monkeypatch.setattr("pulse.evaluation.harness.run_harness", refuse)
    monkeypatch.setattr(importlib.import_module("pulse.evaluation.evaluate"), "evaluate", refuse)  # the module


@pytest.mark.parametrize("args, option, change", [
    (["--passkey", "10000000"], "--passkey", "give shorter lengths"),
    (["--passkey", "200,10000000", "--trials", "1"], "--passkey", "give shorter lengths"),
    (["--harness", "pulse_arith_mc", "--batch-size", "1000000"], "--harness", "give a smaller --batch-size"),
    (["--set", "task.seq_len=10000000"], "pulse eval", "give a shorter task.seq_len"),
])
@pytest.mark.audit("pulse eval", "clean")
def test_an_evaluation_that_would_not_fit_is_refused_before_it_starts(checkpoint, no_work, monkeypatch, args,
                                                                      option, change):
    monkeypatch.setattr(eval_cost, "available_memory", lambda device="cpu": 4.0 * GIB)
    shown = run_cli("eval", checkpoint, *args)
    assert shown.exit_code == 2, shown.output
    message = " ".join(shown.stderr.split())
    assert f"{option}: a forward of" in message and "would need about" in message, message
    assert "of the 4.00 GiB of memory this machine has available" in message and "would fit" in message, message
    assert change in message


@pytest.mark.audit("pulse eval", "clean")
def test_the_context_curve_projects_every_length_and_its_time_from_the_first(checkpoint, no_work, monkeypatch):
    monkeypatch.setattr(eval_cost, "available_memory", lambda device="cpu": 2.0**12)
    small = run_cli("eval", checkpoint, "--context-curve", "64")
    assert small.exit_code == 2 and "of the 4.00 KiB of memory" in " ".join(small.stderr.split()), small.output
    monkeypatch.undo()
    # even the first length is projected: a budget of 0 seconds skips every length, and no window runs
    for option in (["--context-curve", "16,64"], ["--passkey", "200,300", "--trials", "1"]):
        shown = run_cli("eval", checkpoint, *option, "--max-seconds", "0", "--json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.stdout)
        reasons = [p["reason"] for p in doc.get("points", doc.get("skipped"))]
        assert len(reasons) == 2 and all("> --max-seconds 0 " in r and "GFLOP/s" in r for r in reasons), reasons


def test_the_projection_reads_the_block_contract():
    recipe = validate(tiny(Path("corpus"), Path("cache")))
    from pulse.assemble import build_model

    model = build_model(recipe)
    for n in (64, 4096):
        scored, answers = projection.cost(model, n), projection.cost(model, n, batch=4, logits=False)
        assert scored.parts["state"] == summarize(model, seq_len=n, table=False).state_bytes  # the KV cache
        assert scored.parts["logits"] == 2 * n * 259 * 4 and answers.parts["logits"] == 0
        assert answers.parts["state"] == 4 * scored.parts["state"]
    # attention's work per token grows with the context, and the scores of a block of queries with it
    assert projection.cost(model, 8192).parts["activations"] > 1.9 * projection.cost(model, 4096).parts["activations"]
    model.stack.layers[0].mixer.state_numel = lambda n: 10**9  # a block that says it keeps 1e9 numbers
    assert projection.cost(model, 64).parts["state"] == 4 * 10**9


@pytest.mark.parametrize("args, message", [
    (["--context-curve", "0"], "--context-curve: 0 is not a length; a length is a positive number of tokens"),
    (["--context-curve", "-5"], "--context-curve: -5 is not a length"),
    (["--context-curve", "abc"], "--context-curve `abc`: `abc` is not a length"),
    (["--context-curve", ","], "--context-curve is empty"),
    (["--passkey", "-5"], "--passkey: -5 is not a length; a length is a positive number of tokens"),
    (["--passkey", "16"], "--passkey: T=16 is too short"),
    (["--passkey", "200", "--depths", "0,2"], "between 0 and 1"),
    (["--passkey", "200", "--depths", "nan"], "between 0 and 1"),
    (["--passkey", "200", "--trials", "0"], "--trials"),
    (["--context-curve", "16", "--windows", "0"], "--windows"),
    (["--context-curve", "16", "--max-seconds", "-1"], "--max-seconds"),
    (["--harness", "pulse_arith_mc", "--limit", "0"], "--limit 0: give a number of documents per task"),
    (["--harness", "pulse_arith_mc", "--limit", "2.5"], "a whole number"),
    (["--harness", "pulse_arith_mc", "--limit", "inf"], "--limit inf"),
    (["--passkey", "200", "--windows", "3"], "--windows is an option of --context-curve, not of --passkey"),
    (["--depths", "0,1"], "--depths is an option of --passkey, not of the held-out evaluation"),
    (["--context-curve", "16", "--passkey", "200"], "give one evaluation at a time"),
])
@pytest.mark.audit("pulse eval", "clean")
def test_every_bad_option_of_eval_is_one_clear_error(checkpoint, no_work, args, message):
    shown = run_cli("eval", checkpoint, *args)
    assert shown.exit_code == 2, shown.output
    assert message in " ".join(shown.output.split()), shown.output
    assert "Traceback" not in shown.output and "task.seq_len" not in shown.output


@pytest.mark.audit("pulse eval", "correct")
def test_a_stored_corpus_path_is_used_where_it_exists_and_named_where_not(checkpoint, tmp_path):
    stored = json.loads((checkpoint / "recipe.json").read_text())["task"]["path"]
    assert Path(stored).is_absolute()
    with pytest.warns(PulseWarning, match=r"using the corpus at task.path = '.*corpus', stored with the run"):
        shown = run_cli("eval", checkpoint, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["metrics"]["loss"] > 0
    elsewhere = tmp_path / "moved"
    Path(stored).rename(elsewhere)
    try:
        missing = run_cli("eval", checkpoint, "--context-curve", "16")
        assert missing.exit_code == 2
        text = " ".join(missing.stderr.split())
        assert f"task.path = '{stored}', which does not exist on this machine" in text, text
        assert "--set task.path=PATH" in text
        given = run_cli("eval", checkpoint, "--context-curve", "16", "--set", f"task.path={json.dumps(str(elsewhere))}")
        assert given.exit_code == 0, given.output
    finally:
        elsewhere.rename(stored)


@pytest.mark.audit("pulse eval", "correct")
def test_memory_that_cannot_be_read_is_said_not_guessed(monkeypatch):
    # where neither /proc/meminfo nor sysconf tells the free memory, no invented figure refuses or allows a length:
    # the projection is still made, and a warning says it was not checked
    monkeypatch.setattr(eval_cost, "available_memory", lambda device="cpu": None)
    project = lambda n: projection.Cost(length=n, batch=1, memory_bytes=1e15, flops=1.0, parts={"activations": 1e15})  # noqa: E731
    with pytest.warns(PulseWarning, match=r"--passkey: this machine's free memory cannot be read, .* is not checked"):
        costs = eval_cost.check_memory(project, [10, 20], option="--passkey")
    assert [c.length for c in costs] == [10, 20]
    monkeypatch.setattr(eval_cost, "available_memory", lambda device="cpu": 4.0 * GIB)
    with pytest.raises(pulse.PulseError, match="would need about"):
        eval_cost.check_memory(project, [10], option="--passkey")
