"""One way in (pulse.api.open_source): every kind of source, and one answer per file whichever command reads it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pulse
from helpers import run_cli
from pulse.api.source import open_source
from pulse.errors import PulseError
from pulse.evaluation import evaluate_checkpoint
from pulse.storage.checkpoint import WEIGHTS, recipe_hash
from pulse.storage.runfiles import newest_weights
from pulse.train import train
from test_train import Interrupt, recipe_dict, write_recipe

ROOT = Path(__file__).resolve().parent.parent
LM = {"model": {"kind": "lm", "vocab_size": 259, "dim": 16, "depth": 1, "layout": ["attn"],
                "mixers": {"attn": {"kind": "attention", "num_heads": 2}}}}


def recipe(**train_settings):
    """test_train's tiny MQAR recipe, with a vocabulary that holds the byte tokenizer (so it can generate text)."""
    data = recipe_dict(**train_settings)
    data["model"]["vocab_size"] = 259
    return pulse.recipe_from_dict(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished run (4 steps), and one finished at 4, resumed to 12 and stopped at step 9 (newest: step 8)."""
    root = tmp_path_factory.mktemp("runs")
    train(recipe(steps=4, eval_every=0), root / "done")
    train(recipe(steps=4, eval_every=0), root / "longer")
    with pytest.raises(KeyboardInterrupt):
        train(recipe(steps=12, eval_every=0), root / "longer", resume=True, reporter=Interrupt(at=9))
    return {"done": root / "done", "longer": root / "longer"}


def test_each_kind_of_source_opens_into_one_object(runs, tmp_path):
    card = open_source("transformer-small")
    assert card.origin == "recipe" and card.weights is None and card.location.name == "transformer-small.toml"
    file = open_source(ROOT / "recipes/transformer.toml", ["model.depth=1"])
    assert file.recipe.model.depth == 1 and "--set model.depth=1" in file.recipe.source
    done = open_source(runs["done"])
    assert done.origin == "run" and done.weights == runs["done"] / WEIGHTS and done.step == 4
    assert done.head is None and done.trained
    step_dir = runs["done"] / "checkpoints/step-00000004"
    ckpt = open_source(step_dir)
    assert ckpt.origin == "checkpoint" and ckpt.weights == step_dir / WEIGHTS
    single = open_source(step_dir / WEIGHTS)
    assert single.origin == "checkpoint" and single.recipe.hash() == ckpt.recipe.hash()


def test_a_run_opens_at_its_newest_weights_whether_final_or_a_step_checkpoint(runs):
    # finished at step 4 (final weights), then resumed to 12 and stopped at 9: step 8 is the newest
    assert [s for s, _ in newest_weights(runs["longer"])][:2] == [8, 4]
    source = open_source(runs["longer"])
    assert source.step == 8 and source.weights.parent.name == "step-00000008"
    assert source.recipe.train.steps == 12
    result = evaluate_checkpoint(runs["longer"])
    assert result.location.name == "step-00000008"


def test_a_damaged_newest_checkpoint_is_skipped_with_a_note(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["longer"], run)
    newest = run / "checkpoints/step-00000008" / WEIGHTS
    newest.write_bytes(newest.read_bytes()[:100])
    source = open_source(run)
    assert source.step == 4 and "skipped the damaged checkpoint" in source.notes[0]
    shown = run_cli("generate", run, "--prompt", "a", "-n", "2")
    assert shown.exit_code == 0 and "skipped the damaged checkpoint" in shown.stderr, shown.output


def test_a_run_without_weights_yet_is_refused_where_weights_are_needed(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(recipe(steps=12, checkpoint_every=4, eval_every=0), run, reporter=Interrupt(at=2))
    source = open_source(run)
    assert source.origin == "run" and source.weights is None and source.recipe.train.steps == 12
    with pytest.raises(PulseError, match="written no weights yet"):
        source.build()
    assert source.build(load=False) is not None  # `pulse build RUN` prints its architecture
    for args in (("generate", run, "--prompt", "a"), ("eval", run)):
        result = run_cli(*args)
        assert result.exit_code == 2 and "written no weights yet" in result.stderr, args
    assert run_cli("summarize", run, "--json").exit_code == 0


def test_generate_on_an_interrupted_run_uses_its_newest_checkpoint(runs):
    result = run_cli("generate", runs["longer"], "--prompt", "ab", "-n", "3")
    assert result.exit_code == 0, result.output


def test_a_pickle_file_gives_the_same_error_to_every_command(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04not really")
    commands = [("build", pt), ("summarize", pt), ("validate", pt), ("generate", pt, "--prompt", "a"),
                ("eval", pt), ("viz", pt, "--prompt", "a", "--out", tmp_path / "v"), ("train", pt, "-q"),
                ("bench", pt, "--seq-lens", "8")]
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        commands.append(("export", pt, "--out", tmp_path / "m.onnx"))
    for args in commands:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "is a pickle file" in result.stderr and "never loads pickle" in result.stderr, (args, result.stderr)
    with pytest.raises(PulseError, match="is a pickle file"):
        pulse.PulseForCausalLM.from_pretrained(pt)


def test_a_directory_that_is_neither_gives_one_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (("build", tmp_path / "empty"), ("generate", tmp_path / "empty", "--prompt", "a"),
                 ("eval", tmp_path / "empty")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "neither a checkpoint nor a run" in result.stderr, (args, result.stderr)


def _move_corpus_away(run: Path, where: str) -> None:
    """Rewrite the run's stored recipes as if it had been trained on a corpus at `where` (not on this machine)."""
    for folder in [run, *(run / "checkpoints").iterdir()]:
        file = folder / WEIGHTS
        with safe_open(str(file), framework="pt") as f:
            meta = dict(f.metadata())
        data = json.loads(meta["pulse_recipe"])
        data["task"]["path"] = where
        meta["pulse_recipe"] = json.dumps(data, sort_keys=True)
        meta["pulse_recipe_hash"] = recipe_hash(data)
        save_file(load_file(str(file)), str(file), metadata=meta)
        (folder / "recipe.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_a_run_trained_on_a_corpus_not_here_still_generates_exports_and_loads(tmp_path):
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 50)
    data = {**LM, "task": {"kind": "text", "path": str(tmp_path / "corpus.txt"), "seq_len": 16},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "threads": 1, "device": "cpu"}}
    run = tmp_path / "run"
    assert run_cli("train", write_recipe(tmp_path / "r.toml", data), "--out", run, "-q").exit_code == 0
    _move_corpus_away(run, "/data/elsewhere/corpus.txt")
    assert run_cli("generate", run, "--prompt", "the", "-n", "4").exit_code == 0
    assert run_cli("generate", run, "--prompt", "the", "-n", "4", "--set", "task.seq_len=8").exit_code == 0
    lm = pulse.PulseForCausalLM.from_pretrained(run)
    assert isinstance(lm.generate_text("the", max_new_tokens=2), str)
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        assert run_cli("export", run, "--out", tmp_path / "m.onnx").exit_code == 0
    # what reads the corpus names the stored path that is not here, and takes one given on the command line
    refused = run_cli("eval", run)
    shown = " ".join(refused.stderr.split())
    assert refused.exit_code == 2 and "task.path = '/data/elsewhere/corpus.txt', which does not exist" in shown
    given = run_cli("eval", run, "--set", f"task.path={json.dumps(str(tmp_path / 'corpus.txt'))}", "--json")
    assert given.exit_code == 0, given.output


def test_set_on_a_stored_recipe_applies_but_never_to_the_model(runs):
    source = open_source(runs["done"], ["train.batch_size=4"])
    assert source.recipe.train.batch_size == 4
    for command in (("generate", runs["done"], "--prompt", "a"), ("summarize", runs["done"]),
                    ("train", runs["done"], "-q")):
        result = run_cli(*command, "--set", "model.depth=3")
        assert result.exit_code == 2 and "stored weights fix the model" in result.stderr, (command, result.stderr)
    with pytest.raises(PulseError, match="stored weights fix the model"):
        pulse.create_model(runs["done"], depth=3)


def test_an_edited_readable_recipe_gives_one_error_to_every_reader(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["done"], run)
    readable = json.loads((run / "recipe.json").read_text())
    readable["train"]["lr"] = 0.5
    (run / "recipe.json").write_text(json.dumps(readable))
    for args in (("generate", run, "--prompt", "a"), ("eval", run), ("summarize", run), ("train", run, "-q")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "recipe.json does not match" in result.stderr, args


def test_a_text_run_stored_before_reset_at_eos_keeps_its_documents_running_on(tmp_path):
    """task.reset_at_eos is new and true by default; a stored text recipe without it was trained with documents
    running into each other, and opens that way (a new one stores the field explicitly)."""
    from pulse.api.source import _from_stored

    stored = pulse.specs.load.load_recipe(Path(__file__).resolve().parent.parent / "recipes/text-hybrid.toml").to_dict()
    assert stored["task"]["reset_at_eos"] is True
    del stored["task"]["reset_at_eos"]
    old = _from_stored(stored, tmp_path, None, "checkpoint", (), None, False, None, [])
    assert old.recipe.task.reset_at_eos is False
